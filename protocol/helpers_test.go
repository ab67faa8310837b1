package protocol_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// patience turns hangs into failures; nothing here asserts speed.
const patience = 10 * time.Second

// settle is how long to wait before checking that something did not
// happen (again), where no event marks that it will not: it only gives
// other goroutines a chance to run. Nothing in protocol or rpcconn delays
// on purpose (a Finish goes out as soon as the caller releases a result),
// so where an event does mark it (Done, a reply), tests wait for that.
const settle = 100 * time.Millisecond

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// The helpers that open sockets (socketpair, listen) check the
// descriptors of the tests that use them, with fdcheck.Check: each check
// covers what was opened after it and closed by later cleanups. Not dial:
// a listener accepts asynchronously, so a connection dialed earlier may
// add its accepted socket after a later dial's baseline; listen's check,
// after the listener has ended, covers every dial.

// socketpair returns the two ends of a connected AF_UNIX stream socket.
func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fdcheck.Check(t, patience)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// newLogger returns a Debug-level logger into a buffer that is printed
// if the test fails.
func newLogger(t *testing.T, name string) (*slog.Logger, *syncbuf.Buffer) {
	t.Helper()
	b := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, b.String())
		}
	})
	h := slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h).With("process", name), b
}

// eventually waits until cond holds, failing the test after patience.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDone(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(patience):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func waitErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(patience):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// serve runs protocol.Serve on nc in a goroutine and returns a channel
// with its result; the test's cleanup waits for it.
func serve(t *testing.T, ctx context.Context, nc net.Conn, newInit func(*protocol.Conn) capnp.Client, opts *protocol.Options) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ch <- protocol.Serve(ctx, nc, newInit, opts)
	}()
	t.Cleanup(func() {
		nc.Close()
		select {
		case <-done:
		case <-time.After(patience):
			t.Errorf("Serve did not return")
		}
	})
	return ch
}

// connect runs protocol.Connect on nc; the test's cleanup closes the
// connection and waits for its end.
func connect(t *testing.T, nc net.Conn, opts *protocol.Options) (*protocol.Conn, capnp.Client) {
	t.Helper()
	conn, client, err := protocol.Connect(testContext(t), nc, opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		select {
		case <-conn.Done():
		case <-time.After(patience):
			t.Errorf("client connection did not end")
		}
	})
	return conn, client
}

// echoServer implements schema.Echo; it panics on "panic" and fails on
// "fail".
type echoServer struct{}

func (echoServer) Echo(ctx context.Context, call schema.Echo_echo) error {
	s, err := call.Args().Echo()
	if err != nil {
		return err
	}
	switch s {
	case "panic":
		panic("echo asked to panic")
	case "fail":
		return errors.New("echo asked to fail")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(s)
}

// EchoAfter is not used by these tests (the Slow test schema times calls);
// it completes schema.Echo_Server.
func (echoServer) EchoAfter(ctx context.Context, call schema.Echo_echoAfter) error {
	return errors.New("echoAfter: not implemented by this test server")
}

// initServer implements schema.Init for one connection.
type initServer struct {
	opts *protocol.ServerOptions
}

func (s *initServer) MakeEcho(ctx context.Context, call schema.Init_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e := echoServer{}
	return res.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, s.opts)))
}

func (s *initServer) Hello(ctx context.Context, call schema.Init_hello) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	info, err := res.NewCallee()
	if err != nil {
		return err
	}
	info.SetProtocolVersion(schema.ProtocolVersion)
	info.SetPid(int32(os.Getpid()))
	return info.SetExecutable("protocol.test")
}

// newInit is a bootstrap factory serving schema.Init; debugCalls turns on
// NewServer's call logging.
func newInit(debugCalls bool) func(*protocol.Conn) capnp.Client {
	return func(c *protocol.Conn) capnp.Client {
		impl := &initServer{opts: &protocol.ServerOptions{Logger: c.Logger(), DebugCalls: debugCalls}}
		return protocol.NewServer(schema.Init_Methods(nil, impl), impl, impl.opts)
	}
}

// callEcho calls echo on e and returns the result.
func callEcho(ctx context.Context, e schema.Echo, s string) (string, error) {
	f, release := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", err
	}
	return res.Result()
}

// slowServer implements testschema.Slow: sleep blocks (after call.Go())
// until released, ms pass, or the call's ctx ends.
type slowServer struct {
	entered chan struct{} // receives once per sleep call that started
	release chan struct{} // closed to let every sleep return
	conn    *protocol.Conn
}

func newSlow() *slowServer {
	return &slowServer{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *slowServer) Sleep(ctx context.Context, call testschema.Slow_sleep) error {
	call.Go()
	ms := call.Args().Ms()
	select {
	case s.entered <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-s.release:
		return nil
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowServer) Echo(ctx context.Context, call testschema.Slow_echo) error {
	in, err := call.Args().S()
	if err != nil {
		return err
	}
	if in == "close" && s.conn != nil {
		s.conn.Close()
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetS(in)
}

func slowEcho(ctx context.Context, c testschema.Slow, s string) (string, error) {
	f, release := c.Echo(ctx, func(p testschema.Slow_echo_Params) error { return p.SetS(s) })
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", err
	}
	return res.S()
}

// makeEcho calls boot.makeEcho and returns the pipelined Echo, valid until
// release is called.
func makeEcho(ctx context.Context, boot schema.Init) (schema.Echo, capnp.ReleaseFunc) {
	f, release := boot.MakeEcho(ctx, nil)
	return f.Result(), release
}
