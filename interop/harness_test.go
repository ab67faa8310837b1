package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/interop/internal/ischema"
	"github.com/gomultiprocess/multiprocess/interop/internal/mpischema"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// patience turns hangs into failures; nothing here asserts speed.
const patience = 20 * time.Second

// transports are the two ways the peers meet: a socketpair whose one end
// the child inherits as descriptor 3, and a unix socket.
var transports = []string{"fd", "unix"}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// socketpair returns our end of a new socketpair as a net.Conn and the
// other end as a file for a child.
func socketpair(t *testing.T) (net.Conn, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	nc, err := netFileConn(os.NewFile(uintptr(fds[0]), "ours"))
	if err != nil {
		t.Fatalf("FileConn: %v", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "theirs")
	t.Cleanup(func() { theirs.Close() })
	return nc, theirs
}

// filePair returns the two ends of a new socketpair as files, for two
// children that talk to each other.
func filePair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// netFileConn turns f into a net.Conn and closes f.
func netFileConn(f *os.File) (net.Conn, error) {
	defer f.Close()
	return net.FileConn(f)
}

// socketPath returns a path for a unix socket in a short temporary folder
// (t.TempDir's paths can exceed the 107 bytes a socket path may have).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mpi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

// child is a running peer process whose standard output is collected line
// by line.
type child struct {
	name   string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	stdin  io.WriteCloser
	read   chan struct{} // closed when stdout reached EOF
	exited chan struct{} // closed when the process has been reaped
	err    error         // from Wait; set before exited is closed

	mu    sync.Mutex
	lines []string
}

// startChild starts path with args, extra (if not nil) as descriptor 3
// and env added to the environment. The child is killed and reaped when
// the test ends, if it has not exited by then.
func startChild(t *testing.T, path string, args []string, extra *os.File, env ...string) *child {
	t.Helper()
	c := &child{name: filepath.Base(path) + " " + strings.Join(args, " "), read: make(chan struct{}), exited: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	if extra != nil {
		c.cmd.ExtraFiles = []*os.File{extra}
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", c.name, err)
	}
	if extra != nil {
		extra.Close() // the child has its copy: its end must close when it dies
	}
	go c.scan(out)
	go func() {
		<-c.read // Wait closes the pipe: read it all first
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill()
		<-c.exited
		c.stdin.Close()
		if strings.Contains(c.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race", c.name)
		}
		if t.Failed() {
			t.Logf("%s: stdout:\n%s\nstderr:\n%s", c.name, strings.Join(c.output(), "\n"), c.stderr.String())
		}
	})
	return c
}

func (c *child) scan(r io.Reader) {
	defer close(c.read)
	s := bufio.NewScanner(r)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		c.mu.Lock()
		c.lines = append(c.lines, s.Text())
		c.mu.Unlock()
	}
	io.Copy(io.Discard, r) // a line over the limit: keep the child from blocking
}

func (c *child) output() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// kill sends SIGKILL unless the child has been reaped.
func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		c.cmd.Process.Kill()
	}
}

// waitLine waits for a line that starts with prefix and returns it.
func (c *child) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		for _, l := range c.output() {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		select {
		case <-c.exited:
			for _, l := range c.output() {
				if strings.HasPrefix(l, prefix) {
					return l
				}
			}
			t.Fatalf("%s exited (%v) before printing %q", c.name, c.err, prefix)
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not print %q within %v", c.name, prefix, patience)
	return ""
}

// wait waits for the child to exit and returns Wait's error.
func (c *child) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.err
	case <-time.After(patience):
		t.Fatalf("%s did not exit within %v", c.name, patience)
		return nil
	}
}

func connOptions(t *testing.T) *protocol.Options {
	t.Helper()
	var logs syncbuf.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("connection log:\n%s", logs.String())
		}
	})
	h := slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	return &protocol.Options{Logger: slog.New(h)}
}

// cppServer is a C++ peer serving Peer, with a Go connection to it.
type cppServer struct {
	proc *child
	conn *protocol.Conn
	peer ischema.Peer   // the bootstrap capability, on go-capnp's generated API
	mp   mpischema.Peer // the same, on mpgen's (a proxy of its own)
}

// dialCpp starts the C++ peer as a server on transport and connects to
// it. When the test ends, it releases the peer, closes the connection and
// checks that the C++ side saw the disconnection and exited cleanly.
func dialCpp(t *testing.T, transport string) *cppServer {
	t.Helper()
	return dialCppWith(t, transport, nil)
}

// dialCppWith is dialCpp with a function that wraps the Go side's end of
// the connection (nil: none).
func dialCppWith(t *testing.T, transport string, wrap func(net.Conn) net.Conn) *cppServer {
	t.Helper()
	requirePeer(t)
	s := &cppServer{}
	var nc net.Conn
	switch transport {
	case "fd":
		var theirs *os.File
		nc, theirs = socketpair(t)
		s.proc = startChild(t, peerPath, []string{"serve-fd", "3"}, theirs)
	case "unix":
		path := socketPath(t)
		s.proc = startChild(t, peerPath, []string{"serve-unix", path}, nil)
		s.proc.waitLine(t, "listening")
		var err error
		if nc, err = net.Dial("unix", path); err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	conn, boot, err := protocol.Connect(testContext(t), nc, connOptions(t))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	s.conn, s.peer = conn, ischema.Peer(boot.AddRef())
	s.mp = mpischema.PeerInterface.FromCapnp(boot)
	t.Cleanup(func() {
		s.release()
		s.conn.Close()
		select {
		case <-s.conn.Done():
		case <-time.After(patience):
			t.Errorf("connection did not end within %v", patience)
		}
	})
	return s
}

// expectCleanExit checks that the C++ server saw the disconnection and
// exited with status 0. Call it after closing the connection.
func (s *cppServer) expectCleanExit(t *testing.T) {
	t.Helper()
	s.release()
	s.conn.Close()
	if err := s.proc.wait(t); err != nil {
		t.Errorf("C++ server: %v", err)
	}
	s.proc.waitLine(t, "disconnected")
}

// release releases both proxies of the bootstrap capability.
func (s *cppServer) release() {
	s.peer.Release()
	mp.Release(s.mp)
}

// runCppClient serves p to the C++ peer running scenario as a client on
// transport, waits for it to exit and returns its output lines. It fails
// the test if the client reports a failed check or exits with an error.
func runCppClient(t *testing.T, transport, scenario string, p goServer) []string {
	t.Helper()
	return runCppClientWith(t, transport, scenario, p, nil)
}

// runCppClientWith is runCppClient with a function that runs, in a
// goroutine of its own, while the client runs; an error it returns fails
// the test.
func runCppClientWith(t *testing.T, transport, scenario string, p goServer, during func(*child) error) []string {
	t.Helper()
	requirePeer(t)
	ctx := testContext(t)
	var nc net.Conn
	var proc *child
	switch transport {
	case "fd":
		var theirs *os.File
		nc, theirs = socketpair(t)
		proc = startChild(t, peerPath, []string{"client-fd", "3", scenario}, theirs)
	case "unix":
		path := socketPath(t)
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		defer l.Close()
		proc = startChild(t, peerPath, []string{"client-unix", path, scenario}, nil)
		l.(*net.UnixListener).SetDeadline(time.Now().Add(patience))
		if nc, err = l.Accept(); err != nil {
			t.Fatalf("accept: %v", err)
		}
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(ctx, nc, func(*protocol.Conn) capnp.Client { return p.client() }, connOptions(t))
	}()
	duringErr := make(chan error, 1)
	if during != nil {
		go func() { duringErr <- during(proc) }()
	} else {
		duringErr <- nil
	}
	procErr := proc.wait(t)
	if err := <-duringErr; err != nil {
		t.Error(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(patience):
		t.Fatalf("Serve did not return within %v of the C++ client's exit", patience)
	}
	p.wait()
	out := proc.output()
	for _, l := range out {
		if strings.HasPrefix(l, "FAIL") || strings.HasPrefix(l, "exception") {
			t.Logf("C++ client: %s", l)
		}
	}
	var ee *exec.ExitError
	if errors.As(procErr, &ee) {
		t.Errorf("C++ client %s: %v", scenario, procErr)
	} else if procErr != nil {
		t.Fatalf("C++ client %s: %v", scenario, procErr)
	}
	return out
}

// expectLines checks that out has a line starting with each of want.
func expectLines(t *testing.T, out []string, want ...string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, l := range out {
			if strings.HasPrefix(l, w) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("C++ client printed no line starting with %q", w)
		}
	}
}
