package process

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

var (
	// ErrAddressInUse means a process still accepts connections on the
	// socket path given to Listen; the socket is left alone.
	ErrAddressInUse = errors.New("process: address in use")
	// ErrNotSocket means the path given to Listen exists and is not a
	// socket (a regular file, a directory, a symbolic link...); it is left
	// alone.
	ErrNotSocket = errors.New("process: path exists and is not a socket")
)

// ListenConfig holds the optional settings of Listen. Its zero value, like a
// nil *ListenConfig, is ready to use.
type ListenConfig struct {
	// OnRefused, if not nil, is called by Accept for each connection it
	// refused because CheckPeer failed (a peer with another uid, or
	// credentials that could not be read), after closing that connection.
	// cred is what could be read of the peer. It runs on the goroutine
	// calling Accept, which continues with the next connection when it
	// returns. Default nil: refusals are silent.
	OnRefused func(cred PeerCred, err error)
}

// Listen binds a unix stream socket at path and listens on it.
//
// If a process still accepts connections at path, Listen fails with
// ErrAddressInUse and leaves the socket alone (to find out, Listen connects
// once and hangs up; that listener sees one connection that ends at once). A stale socket (connecting
// gives ECONNREFUSED) is replaced. Anything else at path fails with
// ErrNotSocket, and any other failure to probe the path fails too; in both
// cases nothing is touched. The directory of path, and any missing parent,
// is created with mode 0700; an existing directory keeps its mode.
//
// The socket has mode 0600 from the moment it is reachable at path: it is
// bound in a fresh private (0700) directory beside path, chmod'ed there, and
// then renamed into place without replacing anything (renameat2 with
// RENAME_NOREPLACE, or link(2) where the file system lacks it). The process
// umask is neither read nor changed.
//
// The listener accepts only peers that pass CheckPeer (the same uid as this
// process); others are closed and reported to cfg.OnRefused. Close removes
// the socket file if it is still the one this listener bound: a file that
// someone replaced meanwhile is left alone. Addr reports path.
//
// Between the probe of an existing socket and its replacement there is a
// window in which another process could bind the same path; keeping two
// programs off one path is the job of a lock such as the node's data
// directory lock.
func Listen(path string, cfg *ListenConfig) (net.Listener, error) {
	if cfg == nil {
		cfg = &ListenConfig{}
	}
	if path == "" || strings.IndexByte(path, 0) >= 0 {
		return nil, fmt.Errorf("process: listen: invalid socket path %q", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("process: listen %s: %w", Address(path), err)
	}
	path = abs
	if err := checkPathLen(path); err != nil {
		return nil, err
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	if base == string(filepath.Separator) {
		return nil, fmt.Errorf("process: listen: invalid socket path %q", path)
	}
	if err := mkdirPrivate(dir); err != nil {
		return nil, fmt.Errorf("process: listen %s: %w", Address(path), err)
	}
	l, err := bindAndPlace(dir, base)
	if err != nil {
		return nil, err
	}
	l.onRefused = cfg.OnRefused
	return l, nil
}

// mkdirPrivate makes dir and its missing parents with mode 0700. The mode is
// set explicitly after mkdir because the umask may have cleared bits; it can
// only have cleared them, so no wider mode is ever visible.
func mkdirPrivate(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: unix.ENOTDIR}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirPrivate(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Made by someone else meanwhile: it is theirs, keep its mode.
			return mkdirPrivate(dir)
		}
		return err
	}
	return os.Chmod(dir, 0o700)
}

// placeAttempts bounds how often Listen re-examines the path when it changes
// under its feet (a file appears after a stale socket was removed...).
const placeAttempts = 3

// bindAndPlace binds a listening socket in a private temporary directory in
// dir and moves it to dir/base under the rules documented on Listen.
func bindAndPlace(dir, base string) (_ *listener, err error) {
	path := filepath.Join(dir, base)
	wrap := func(err error) error { return fmt.Errorf("process: listen %s: %w", Address(path), err) }

	parent, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, wrap(&fs.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(parent)

	tmpPath, err := os.MkdirTemp(dir, ".sock")
	if err != nil {
		return nil, wrap(err)
	}
	tmpName := filepath.Base(tmpPath)
	defer func() {
		// Whatever happened, the temporary directory goes; on success the
		// socket has already left it, on failure it goes with it.
		_ = unix.Unlinkat(parent, filepath.Join(tmpName, "s"), 0)
		_ = unix.Unlinkat(parent, tmpName, unix.AT_REMOVEDIR)
	}()
	tmp, err := unix.Openat(parent, tmpName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, wrap(&fs.PathError{Op: "open", Path: tmpPath, Err: err})
	}
	defer unix.Close(tmp)
	// MkdirTemp asked for 0700, minus the umask: make it exactly 0700 so that
	// we can bind in it whatever the umask, and nobody else can enter it.
	if err := unix.Fchmod(tmp, 0o700); err != nil {
		return nil, wrap(&fs.PathError{Op: "chmod", Path: tmpPath, Err: err})
	}

	// Bind by the directory's descriptor when the temporary path would not
	// fit in sun_path although the final one does.
	bindPath := filepath.Join(tmpPath, "s")
	if len(bindPath) > MaxPathLen {
		bindPath = "/proc/self/fd/" + strconv.Itoa(tmp) + "/s"
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindPath, Net: "unix"})
	if err != nil {
		return nil, wrap(err)
	}
	// The name ul knows is temporary (or a descriptor path that will mean
	// something else later): it must never unlink it. Close removes the
	// final path itself.
	ul.SetUnlinkOnClose(false)
	defer func() {
		if err != nil {
			ul.Close()
		}
	}()
	if err := unix.Fchmodat(tmp, "s", 0o600, 0); err != nil {
		return nil, wrap(&fs.PathError{Op: "chmod", Path: filepath.Join(tmpPath, "s"), Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tmp, "s", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, wrap(&fs.PathError{Op: "stat", Path: filepath.Join(tmpPath, "s"), Err: err})
	}

	for range placeAttempts {
		done, err := placeSocket(parent, tmp, base, path)
		if err != nil {
			return nil, err
		}
		if done {
			return &listener{ul: ul, path: path, dev: st.Dev, ino: st.Ino}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s keeps changing while Listen binds it", ErrAddressInUse, Address(path))
}

// placeSocket examines parent/base and moves tmp/s there if the rules allow.
// It reports done=false when the path changed meanwhile and should be
// examined again.
func placeSocket(parent, tmp int, base, path string) (done bool, err error) {
	wrap := func(err error) error { return fmt.Errorf("process: listen %s: %w", Address(path), err) }
	var st unix.Stat_t
	err = unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		return moveNoReplace(parent, tmp, base, path)
	case err != nil:
		return false, wrap(&fs.PathError{Op: "lstat", Path: path, Err: err})
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return false, fmt.Errorf("%w: %s is %s", ErrNotSocket, path, fileKind(st.Mode))
	}

	switch err := probe(path); err {
	case nil, unix.EAGAIN:
		// Connected, or the backlog is full: someone is listening.
		return false, fmt.Errorf("%w: a process accepts connections at %s", ErrAddressInUse, Address(path))
	case unix.ENOENT:
		return false, nil
	case unix.ECONNREFUSED:
		// Stale. Remove it only if it is still the file that was probed.
		var now unix.Stat_t
		if err := unix.Fstatat(parent, base, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
			return false, nil
		}
		if err := unix.Unlinkat(parent, base, 0); err != nil && err != unix.ENOENT {
			return false, wrap(&fs.PathError{Op: "remove stale socket", Path: path, Err: err})
		}
		return false, nil
	default:
		return false, wrap(&fs.PathError{Op: "probe existing socket", Path: path, Err: err})
	}
}

// moveNoReplace moves tmp/s to parent/base unless something is there by now.
func moveNoReplace(parent, tmp int, base, path string) (done bool, err error) {
	err = unix.Renameat2(tmp, "s", parent, base, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// The file system cannot rename without replacing; a hard link
		// never replaces either, and the deferred cleanup drops the
		// temporary name.
		err = unix.Linkat(tmp, "s", parent, base, 0)
	}
	switch err {
	case nil:
		return true, nil
	case unix.EEXIST:
		return false, nil
	default:
		return false, fmt.Errorf("process: listen %s: %w", Address(path), &fs.PathError{Op: "rename socket into place", Path: path, Err: err})
	}
}

// probe connects to the unix stream socket at path without blocking and
// reports the connect error: nil or EAGAIN (full backlog) mean a listener.
func probe(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	default:
		return fmt.Sprintf("a file of type %#o", mode&unix.S_IFMT)
	}
}

// listener is what Listen returns.
type listener struct {
	ul        *net.UnixListener
	path      string
	dev, ino  uint64 // identity of the socket file this listener bound
	onRefused func(PeerCred, error)

	closeOnce sync.Once
	closeErr  error
}

// Accept waits for the next connection from a peer with our uid. Refused
// peers are closed and reported, and Accept goes on waiting.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.ul.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := CheckPeer(c)
		if err == nil {
			return &acceptedConn{UnixConn: c.(*net.UnixConn), local: l.Addr()}, nil
		}
		c.Close()
		if l.onRefused != nil {
			l.onRefused(cred, err)
		}
	}
}

// Close stops listening and removes the socket file if it is still the one
// this listener bound. It is idempotent: later calls return the first
// result.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		// Compare identities while our socket is still open: it holds the
		// inode, so no other file can have the same one meanwhile.
		var st unix.Stat_t
		if err := unix.Lstat(l.path, &st); err == nil &&
			st.Mode&unix.S_IFMT == unix.S_IFSOCK && st.Dev == l.dev && st.Ino == l.ino {
			if err := unix.Unlink(l.path); err != nil && err != unix.ENOENT {
				l.closeErr = fmt.Errorf("process: remove socket %s: %w", l.path, err)
			}
		}
		if err := l.ul.Close(); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
	})
	return l.closeErr
}

// acceptedConn is a connection accepted by a listener: the kernel names
// its local end after the temporary path the socket was bound under, so
// LocalAddr gives the final path instead. The embedded *net.UnixConn
// keeps every other method, SyscallConn included.
type acceptedConn struct {
	*net.UnixConn
	local net.Addr
}

func (c *acceptedConn) LocalAddr() net.Addr { return c.local }

// Addr returns the socket's final path (the kernel still knows the
// temporary name it was bound under).
func (l *listener) Addr() net.Addr {
	return &net.UnixAddr{Name: l.path, Net: "unix"}
}
