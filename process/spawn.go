package process

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// childFD is the descriptor number the socket gets in a spawned child: the
// first one after stdin, stdout and stderr, which is where exec.Cmd puts
// ExtraFiles[0].
const childFD = 3

// Config tunes [Spawn]. A nil *Config, like the zero Config, means defaults.
type Config struct {
	// Path is the executable to run. Default: exeName in the directory of
	// this process's own executable (see [ExecutablePath]).
	Path string
	// Env is the child's environment. Default (nil): os.Environ().
	Env []string
	// Stdout is the child's standard output, handed to it as a descriptor,
	// never through a pipe in this process (so no copying goroutine, and no
	// SIGPIPE for either side when one of them goes). Default: os.Stdout.
	Stdout *os.File
	// Stderr is the child's standard error, handed over like Stdout.
	// Default: os.Stderr.
	Stderr *os.File
}

// ExecutablePath returns the path of exeName in the directory of this
// process's own executable (os.Executable, with symlinks resolved), which is
// where [Spawn] looks for it. exeName is a file name, not a path.
func ExecutablePath(exeName string) (string, error) {
	if exeName == "" || exeName == "." || exeName == ".." || strings.ContainsRune(exeName, filepath.Separator) {
		return "", fmt.Errorf("process: executable name %q is not a file name", exeName)
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("process: find own executable: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", fmt.Errorf("process: find own executable: %w", err)
	}
	return filepath.Join(filepath.Dir(self), exeName), nil
}

// Spawn starts `<path> -ipcfd 3` with one end of a new socketpair as the
// child's descriptor 3, and returns the child and this process's end of the
// socket (a *net.UnixConn). The child exits when that connection closes;
// stop it with [Child.Stop] after closing the connection.
//
// Only the socket and the three standard descriptors reach the child: Spawn
// first marks descriptors this process inherited close-on-exec (see
// [MarkInheritedCloseOnExec]). exeName names the child in errors and, when
// cfg.Path is empty, picks the executable (see [ExecutablePath]).
//
// A missing or non-executable file is an error wrapping the operating
// system's error ([fs.ErrNotExist], [fs.ErrPermission]); on every error path
// all descriptors Spawn made are closed.
func Spawn(exeName string, cfg *Config) (*Child, net.Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	path := cfg.Path
	if path == "" {
		p, err := ExecutablePath(exeName)
		if err != nil {
			return nil, nil, fmt.Errorf("process: spawn %q: %w", exeName, err)
		}
		path = p
	}
	// execve would catch these too, but only after the socketpair exists,
	// and its error reads "fork/exec": check first for a plainer message.
	if err := checkExecutable(path); err != nil {
		return nil, nil, fmt.Errorf("process: spawn %q: %w", exeName, err)
	}
	if err := MarkInheritedCloseOnExec(); err != nil {
		return nil, nil, fmt.Errorf("process: spawn %q: %w", exeName, err)
	}

	parentEnd, childEnd, err := socketpair()
	if err != nil {
		return nil, nil, fmt.Errorf("process: spawn %q: %w", exeName, err)
	}
	// From here on childEnd is closed on every path: after Start the child
	// has its own copy, and a copy kept here would hide the child's death
	// (reads on conn would never see EOF).
	defer childEnd.Close()

	conn, err := net.FileConn(parentEnd) // dups, close-on-exec
	parentEnd.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("process: spawn %q: socket: %w", exeName, err)
	}

	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       []string{path, "-ipcfd", strconv.Itoa(childFD)},
		Env:        env,
		ExtraFiles: []*os.File{childEnd}, // becomes fd 3 = childFD
	}
	// Being *os.File, they are handed over as they are, with no pipe.
	// Checked for nil so that a nil os.Stdout means /dev/null rather than
	// a non-nil io.Writer holding a nil *os.File.
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("process: spawn %q: %w", exeName, err)
	}
	return startReaper(cmd), conn, nil
}

// checkExecutable returns an *fs.PathError naming path unless it is a file
// that execve may run.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return &fs.PathError{Op: "exec", Path: path, Err: syscall.EISDIR}
	}
	// access(2) applies execve's own rule, root included: at least one
	// execute bit must be set.
	if err := unix.Access(path, unix.X_OK); err != nil {
		if errors.Is(err, unix.EACCES) {
			return &fs.PathError{Op: "exec", Path: path, Err: fmt.Errorf("not executable: %w", err)}
		}
		return &fs.PathError{Op: "exec", Path: path, Err: err}
	}
	return nil
}
