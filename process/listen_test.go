package process

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

// shortDir returns a new directory with a short path, for socket paths that
// must stay within MaxPathLen.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// listen calls Listen and closes the listener at cleanup.
func listen(t *testing.T, path string, cfg *ListenConfig) net.Listener {
	t.Helper()
	l, err := Listen(path, cfg)
	if err != nil {
		t.Fatalf("Listen(%q): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveEcho accepts connections on l until it is closed and echoes each one.
// Its cleanup closes l and waits for every goroutine it started.
func serveEcho(t *testing.T, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testDeadline))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// exchange dials path and checks that bytes come back from an echo server.
func exchange(t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("Dial(%q): %v", path, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(testDeadline)); err != nil {
		t.Fatal(err)
	}
	msg := []byte("ping " + path)
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo returned %q, want %q", got, msg)
	}
}

// fileState is what "untouched" compares: identity, type, mode, size and
// change times, plus a symlink's target.
type fileState struct {
	dev, ino, size   int64
	mode             uint32
	mtime, ctime     unix.Timespec
	target           string
	dirEntries, data string
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	s := fileState{
		dev: int64(st.Dev), ino: int64(st.Ino), size: st.Size, mode: st.Mode,
		mtime: st.Mtim, ctime: st.Ctim,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		s.target, _ = os.Readlink(path)
	case unix.S_IFDIR:
		entries, _ := os.ReadDir(path)
		for _, e := range entries {
			s.dirEntries += e.Name() + "\n"
		}
	case unix.S_IFREG:
		b, _ := os.ReadFile(path)
		s.data = string(b)
	}
	return s
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestListenAcceptDial(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	l := listen(t, path, nil)
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr() = %q, want %q", got, path)
	}
	if got := l.Addr().Network(); got != "unix" {
		t.Errorf("Addr().Network() = %q, want unix", got)
	}
	serveEcho(t, l)
	for range 3 {
		exchange(t, path)
	}
}

func TestListenLiveSocketInUse(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)
	path := filepath.Join(dir, "node.sock")
	serveEcho(t, listen(t, path, nil))
	before := stateOf(t, path)

	l, err := Listen(path, nil)
	if !errors.Is(err, ErrAddressInUse) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("second Listen(%q) = %v, want %v", path, err, ErrAddressInUse)
	}
	if !strings.Contains(err.Error(), Address(path)) {
		t.Errorf("error %q does not name %s", err, Address(path))
	}
	if after := stateOf(t, path); after != before {
		t.Errorf("socket changed by refused Listen:\n before %+v\n after  %+v", before, after)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"node.sock"}) {
		t.Errorf("directory holds %q after refused Listen, want only node.sock", names)
	}
	exchange(t, path) // the first listener still serves
}

func TestListenReplacesStaleSocket(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)
	path := filepath.Join(dir, "node.sock")
	// A listener that went away without removing its file.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	stale := stateOf(t, path)
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling the stale socket: %v, want ECONNREFUSED", err)
	}

	serveEcho(t, listen(t, path, nil))
	if now := stateOf(t, path); now.ino == stale.ino && now.dev == stale.dev {
		t.Error("stale socket file is still in place")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"node.sock"}) {
		t.Errorf("directory holds %q, want only node.sock", names)
	}
	exchange(t, path)
}

func TestListenRefusesNonSocket(t *testing.T) {
	tests := []struct {
		kind string
		make func(t *testing.T, path string)
	}{
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(path, "inside"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink("/nonexistent/target.sock", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink to a stale socket", func(t *testing.T, path string) {
			target := path + ".target"
			old, err := net.ListenUnix("unix", &net.UnixAddr{Name: target, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			old.SetUnlinkOnClose(false)
			old.Close()
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"named pipe", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			fdcheck.CheckSame(t, fdWait)
			dir := shortDir(t)
			path := filepath.Join(dir, "node.sock")
			tt.make(t, path)
			before := stateOf(t, path)
			names := dirNames(t, dir)

			l, err := Listen(path, nil)
			if !errors.Is(err, ErrNotSocket) {
				if err == nil {
					l.Close()
				}
				t.Fatalf("Listen over a %s = %v, want %v", tt.kind, err, ErrNotSocket)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if after := stateOf(t, path); after != before {
				t.Errorf("%s changed:\n before %+v\n after  %+v", tt.kind, before, after)
			}
			if after := dirNames(t, dir); !slices.Equal(after, names) {
				t.Errorf("directory holds %q after Listen, %q before", after, names)
			}
		})
	}
}

// TestListenModes checks the socket's and its new directories' modes under
// umasks that would widen them or leave them unusable. It changes the
// process umask, so it must not run in parallel with anything.
func TestListenModes(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o777} {
		t.Run(fs.FileMode(mask).String(), func(t *testing.T) {
			fdcheck.CheckSame(t, fdWait)
			old := syscall.Umask(mask)
			t.Cleanup(func() { syscall.Umask(old) })

			dir := shortDir(t)
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "a", "b", "node.sock")
			serveEcho(t, listen(t, path, nil))

			for _, d := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")} {
				if fi, err := os.Stat(d); err != nil || fi.Mode() != fs.ModeDir|0o700 {
					t.Errorf("created directory %s: %v, %v; want mode %v", d, fi.Mode(), err, fs.ModeDir|0o700)
				}
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("existing directory %s: %v, %v; want its mode 0755 kept", dir, fi.Mode(), err)
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|0o600 {
				t.Errorf("socket %s: %v, %v; want mode %v", path, fi.Mode(), err, fs.ModeSocket|0o600)
			}
			if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"node.sock"}) {
				t.Errorf("socket directory holds %q, want only node.sock", names)
			}
			exchange(t, path)
		})
	}
}

func TestListenPathLength(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)

	// One byte too long: an error naming the path, and nothing created.
	sub := filepath.Join(dir, strings.Repeat("d", MaxPathLen-len(dir+"/"+"/x.sock")))
	tooLong := sub + "/xx.sock"
	if len(tooLong) != MaxPathLen+1 {
		t.Fatalf("test path is %d bytes", len(tooLong))
	}
	l, err := Listen(tooLong, nil)
	if !errors.Is(err, ErrPathTooLong) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Listen(%d bytes) = %v, want %v", len(tooLong), err, ErrPathTooLong)
	}
	if !strings.Contains(err.Error(), tooLong) {
		t.Errorf("error %q does not show the path", err)
	}
	if _, err := os.Lstat(sub); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Listen with a too-long path created %s (%v)", sub, err)
	}

	// Exactly MaxPathLen: it works, although the temporary directory beside
	// it has a longer path than sun_path holds.
	longest := sub + "/x.sock"
	if len(longest) != MaxPathLen {
		t.Fatalf("test path is %d bytes", len(longest))
	}
	serveEcho(t, listen(t, longest, nil))
	if fi, err := os.Lstat(longest); err != nil || fi.Mode() != fs.ModeSocket|0o600 {
		t.Errorf("socket %s: %v, %v; want mode %v", longest, fi.Mode(), err, fs.ModeSocket|0o600)
	}
	if names := dirNames(t, sub); !slices.Equal(names, []string{"x.sock"}) {
		t.Errorf("socket directory holds %q, want only x.sock", names)
	}
	exchange(t, longest)
}

func TestListenBadDirectory(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(filepath.Join(file, "node.sock"), nil); err == nil {
		l.Close()
		t.Fatal("Listen under a regular file succeeded")
	} else if errors.Is(err, ErrNotSocket) || errors.Is(err, ErrAddressInUse) {
		t.Errorf("Listen under a regular file: %v, want a plain error", err)
	}
}

func TestListenCloseRemovesSocket(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it gone", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		if err == nil {
			c.Close()
		}
		t.Errorf("Accept after Close: %v, want %v", err, net.ErrClosed)
	}
}

// TestListenCloseKeepsReplacement: a listener whose file was removed and
// bound again by another listener must not remove the other's file.
func TestListenCloseKeepsReplacement(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	first, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	second := listen(t, path, nil)
	serveEcho(t, second)
	mine := stateOf(t, path)

	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if now := stateOf(t, path); now.ino != mine.ino || now.dev != mine.dev {
		t.Fatalf("the second listener's socket was replaced or removed")
	}
	exchange(t, path)

	if err := second.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after the second Close: %v, want it gone", err)
	}
}

// reachableTempDir returns a new directory that a process of another uid can
// reach (every directory above it searchable by others), with mode 0755.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	base := os.TempDir()
	for d := base; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			base = "/tmp"
			break
		}
		if d == "/" {
			break
		}
	}
	dir, err := os.MkdirTemp(base, "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// foreignClient is a perl program (perl-base is essential on Debian, so
// /usr/bin/perl and IO::Socket::UNIX are always there) that connects to the
// socket named by its argument, says so, and reports what one read gives:
// "read 0" is end of file.
const foreignClient = `
use IO::Socket::UNIX;
$| = 1;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!\n";
print "connected\n";
my $n = sysread($s, my $buf, 1);
print defined($n) ? "read $n\n" : "read error: $!\n";
`

// TestListenRefusesForeignUID connects a client running as nobody (uid
// 65534) and checks that it is refused and reported, and that a client with
// our uid is still accepted afterwards. It needs root to start a process as
// another user; CI runs it as root.
func TestListenRefusesForeignUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("starting a client with another uid needs root; CI runs this as root")
	}
	const perl = "/usr/bin/perl"
	if _, err := os.Stat(perl); err != nil {
		t.Fatalf("the foreign client needs %s (Debian's essential perl-base): %v", perl, err)
	}
	fdcheck.CheckSame(t, fdWait)

	type refusal struct {
		cred PeerCred
		err  error
	}
	refused := make(chan refusal, 10)
	path := filepath.Join(reachableTempDir(t), "node.sock")
	l := listen(t, path, &ListenConfig{OnRefused: func(cred PeerCred, err error) {
		refused <- refusal{cred, err}
	}})
	// Mode 0600 alone keeps other users out (connect needs write
	// permission). Open it up so the client gets as far as the peer
	// credentials check, the second line of defence under test.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}

	accepted := make(chan net.Conn, 10)
	acceptDone := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				acceptDone <- err
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		l.Close()
		if err := <-acceptDone; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept ended with %v, want %v", err, net.ErrClosed)
		}
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, perl, "-e", foreignClient, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Fatalf("start foreign client: %v", err)
	}
	pid := cmd.Process.Pid
	werr := cmd.Wait()
	if werr != nil || !strings.HasPrefix(stdout.String(), "connected\n") {
		t.Fatalf("foreign client: %v\nstdout: %s\nstderr: %s", werr, stdout.Bytes(), stderr.Bytes())
	}
	if out := stdout.String(); out != "connected\nread 0\n" && !strings.HasPrefix(out, "connected\nread error:") {
		t.Errorf("foreign client's connection was not closed: %q", out)
	}

	select {
	case r := <-refused:
		if !errors.Is(r.err, ErrForeignUID) {
			t.Errorf("refusal reported %v, want %v", r.err, ErrForeignUID)
		}
		if want := (PeerCred{PID: int32(pid), UID: 65534, GID: 65534}); r.cred != want {
			t.Errorf("refusal reported %+v, want %+v", r.cred, want)
		}
	case <-time.After(testDeadline):
		t.Fatal("no refusal reported")
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("Accept returned the foreign client's connection")
	default:
	}

	// Accept went on: a client with our uid gets through.
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	select {
	case sc := <-accepted:
		cred, err := PeerCredentials(sc)
		sc.Close()
		if err != nil || cred.PID != int32(os.Getpid()) {
			t.Errorf("accepted peer %+v, %v; want this process", cred, err)
		}
	case r := <-refused:
		t.Fatalf("own client refused: %+v, %v", r.cred, r.err)
	case <-time.After(testDeadline):
		t.Fatal("own client not accepted")
	}
}
