package protocol_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// The disconnect matrix, after libmultiprocess's test/mp/test/test.cpp:
// a call after the client closed; after the server closed; a disconnect
// during a call; a disconnect while the server's method blocks; releasing
// proxies after the peer is gone; a capability returned after the
// connection broke. Every case ends with both connections over, each
// cleanup hook (on the proxy, on either Conn) run exactly once, and no
// goroutine or descriptor left behind. Calls fail with an error wrapping
// protocol.ErrDisconnected whichever side went away.

// mxSlow implements testschema.Slow for the matrix. sleep reports that it
// started, runs hook (if any), then waits until release is closed or its
// ctx ends, and reports its ctx's error (nil if released).
type mxSlow struct {
	hook    func(ctx context.Context)
	entered chan struct{}
	ended   chan error
	release chan struct{}
}

func newMxSlow(hook func(ctx context.Context)) *mxSlow {
	return &mxSlow{hook: hook, entered: make(chan struct{}, 64), ended: make(chan error, 64), release: make(chan struct{})}
}

func (s *mxSlow) Sleep(ctx context.Context, call testschema.Slow_sleep) error {
	call.Go()
	s.entered <- struct{}{}
	if s.hook != nil {
		s.hook(ctx)
	}
	var err error
	select {
	case <-s.release:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.ended <- err
	return err
}

func (s *mxSlow) Echo(ctx context.Context, call testschema.Slow_echo) error {
	in, err := call.Args().S()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetS(in)
}

// mxSession is one connection of the matrix: a client proxy and Conn, the
// server's Conn and Serve's result, and a count of each cleanup hook.
type mxSession struct {
	client *protocol.Conn
	proxy  capnp.Client
	server *protocol.Conn
	served <-chan error

	servers chan *protocol.Conn // the server's Conn, once it has started

	proxyCleanups, clientCleanups, serverCleanups counter
}

// leakCheck fails the test if, once its cleanups have run, goroutines or
// descriptors are left over that were not there when it was called. Call
// it first, so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	fdcheck.Check(t, patience)
}

// newMxSession serves boot on one end of a socketpair and connects to it
// from the other, with a cleanup hook on each side.
func newMxSession(t *testing.T, boot func(*protocol.Conn) capnp.Client) *mxSession {
	t.Helper()
	s := &mxSession{servers: make(chan *protocol.Conn, 1)}
	a, b := socketpair(t)
	s.served = serve(t, testContext(t), b, func(c *protocol.Conn) capnp.Client {
		c.AddCleanup(s.serverCleanups.inc)
		s.servers <- c
		return boot(c)
	}, nil)
	s.client, s.proxy = connect(t, a, nil)
	t.Cleanup(s.proxy.Release)
	s.client.AddCleanup(s.clientCleanups.inc)
	if err := protocol.AddCleanup(s.proxy, s.proxyCleanups.inc); err != nil {
		t.Fatalf("AddCleanup on the proxy: %v", err)
	}
	return s
}

// awaitServer records the server's Conn; call it after a first call has
// reached the server.
func (s *mxSession) awaitServer(t *testing.T) {
	t.Helper()
	select {
	case s.server = <-s.servers:
	case <-time.After(patience):
		t.Fatal("server did not start")
	}
}

// slowSession is a session whose bootstrap capability is impl.
func slowSession(t *testing.T, impl *mxSlow) (*mxSession, testschema.Slow) {
	t.Helper()
	s := newMxSession(t, func(c *protocol.Conn) capnp.Client {
		return protocol.NewServer(testschema.Slow_Methods(nil, impl), impl, nil)
	})
	slow := testschema.Slow(s.proxy)
	if got, err := slowEcho(testContext(t), slow, "first"); err != nil || got != "first" {
		t.Fatalf("first echo = %q, %v", got, err)
	}
	s.awaitServer(t)
	return s, slow
}

// end waits for both connections to end and checks that each cleanup ran
// exactly once and that Serve returned nil or an error wrapping
// ErrDisconnected.
func (s *mxSession) end(t *testing.T) {
	t.Helper()
	waitDone(t, "client Done", s.client.Done())
	waitDone(t, "server Done", s.server.Done())
	if err := waitErr(t, "Serve", s.served); err != nil && !errors.Is(err, protocol.ErrDisconnected) {
		t.Errorf("Serve = %v, want nil or an error wrapping ErrDisconnected", err)
	}
	s.proxy.Release()
	eventually(t, "the proxy's cleanup", func() bool { return s.proxyCleanups.get() >= 1 })
	for name, c := range map[string]*counter{"proxy": &s.proxyCleanups, "client Conn": &s.clientCleanups, "server Conn": &s.serverCleanups} {
		if n := c.get(); n != 1 {
			t.Errorf("%s cleanup ran %d times, want once", name, n)
		}
	}
}

// wantDisconnected checks that err is a disconnection error by every test
// a caller may use.
func wantDisconnected(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !errors.Is(err, protocol.ErrDisconnected) || !protocol.IsDisconnected(err) {
		t.Errorf("%s: %v, want an error wrapping ErrDisconnected", what, err)
	}
}

// sleepCall starts Slow.sleep and returns its future.
func sleepCall(ctx context.Context, s testschema.Slow, ms uint32) (testschema.Slow_sleep_Results_Future, capnp.ReleaseFunc) {
	return s.Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
		p.SetMs(ms)
		return nil
	})
}

// closer names a side of a session, for the cases that run once with
// each side going away.
type closer struct {
	name  string
	close func(s *mxSession)
}

var sides = []closer{
	{"client closes", func(s *mxSession) { s.client.Close() }},
	{"server closes", func(s *mxSession) { s.server.Close() }},
}

func TestMatrixCallAfterClose(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			leakCheck(t)
			s, slow := slowSession(t, newMxSlow(nil))
			side.close(s)
			if side.name == "server closes" {
				// Once the client has seen the end too: a call made
				// after, not during.
				waitDone(t, "client Done", s.client.Done())
			}
			_, err := slowEcho(testContext(t), slow, "after")
			wantDisconnected(t, "echo after the close", err)
			f, release := sleepCall(testContext(t), slow, 0)
			_, err = f.Struct()
			release()
			wantDisconnected(t, "sleep after the close", err)
			s.end(t)
		})
	}
}

// The server's method closes a connection, either end, and returns at
// once: the caller gets a disconnection error, never the results.
func TestMatrixDisconnectDuringCall(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			leakCheck(t)
			var sess atomic.Pointer[mxSession]
			impl := newMxSlow(func(ctx context.Context) {
				side.close(sess.Load())
			})
			close(impl.release) // return right after the hook
			s, slow := slowSession(t, impl)
			sess.Store(s)
			f, release := sleepCall(testContext(t), slow, 0)
			defer release()
			_, err := f.Struct()
			wantDisconnected(t, "the call during which the connection closed", err)
			waitErr(t, "the method's end", impl.ended)
			s.end(t)
		})
	}
}

// The server's method closes a connection and then blocks, ignoring its
// ctx, until the caller has seen the disconnection: the caller does not
// wait for the method, and the connection ends once the method returns.
// A second method that watches its ctx sees it canceled.
func TestMatrixDisconnectWhileHandlerBlocks(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			leakCheck(t)
			var sess atomic.Pointer[mxSession]
			unblock := make(chan struct{})
			var calls atomic.Int32
			impl := newMxSlow(func(ctx context.Context) {
				if calls.Add(1) == 1 {
					return // the first call watches its ctx
				}
				side.close(sess.Load())
				<-unblock
			})
			s, slow := slowSession(t, impl)
			sess.Store(s)

			watcher, releaseWatcher := sleepCall(testContext(t), slow, 0)
			defer releaseWatcher()
			waitDone(t, "the watching call to start", impl.entered)
			blocker, releaseBlocker := sleepCall(testContext(t), slow, 0)
			defer releaseBlocker()
			_, err := blocker.Struct()
			wantDisconnected(t, "the call whose method blocks", err)
			_, err = watcher.Struct()
			wantDisconnected(t, "the call whose method watches its ctx", err)
			if err := waitErr(t, "the watching method's end", impl.ended); !errors.Is(err, context.Canceled) {
				t.Errorf("the watching method saw %v, want context.Canceled", err)
			}
			select {
			case <-s.server.Done():
				t.Fatal("server connection ended while its method still ran")
			default:
			}
			close(unblock)
			close(impl.release)
			waitErr(t, "the blocking method's end", impl.ended)
			s.end(t)
		})
	}
}

// mxEcho is an Echo whose Shutdown is counted: a capability that was
// handed to a broken connection must still be released.
type mxEcho struct {
	echoServer
	shutdowns *counter
}

func (e mxEcho) Shutdown() { e.shutdowns.inc() }

// mxInit serves schema.Init; makeEcho runs hook before it returns a new
// mxEcho.
type mxInit struct {
	initServer
	hook      func(ctx context.Context)
	made      counter
	shutdowns counter
}

func (s *mxInit) MakeEcho(ctx context.Context, call schema.Init_makeEcho) error {
	call.Go()
	if s.hook != nil {
		s.hook(ctx)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e := mxEcho{shutdowns: &s.shutdowns}
	s.made.inc()
	return res.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, nil)))
}

// Capabilities the client holds (the proxy, an Echo it got, a pipelined
// one) are released after the peer went away, in any order: nothing
// panics, calls on them fail with a disconnection error, and the server
// released the Echo objects it had handed out.
func TestMatrixReleaseAfterPeerGone(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			leakCheck(t)
			impl := &mxInit{}
			s := initSessionWith(t, impl)
			ctx := testContext(t)
			boot := schema.Init(s.proxy)
			made, releaseMade := boot.MakeEcho(ctx, nil)
			got, err := made.Struct()
			if err != nil {
				t.Fatal(err)
			}
			held := capnp.Client(got.Result()).AddRef()
			releaseMade()
			pipelined, releasePipelined := boot.MakeEcho(ctx, nil)
			if out, err := callEcho(ctx, pipelined.Result(), "p"); err != nil || out != "p" {
				t.Fatalf("echo on a pipelined Echo = %q, %v", out, err)
			}

			side.close(s)
			waitDone(t, "client Done", s.client.Done())
			_, err = callEcho(ctx, schema.Echo(held), "gone")
			wantDisconnected(t, "echo on a held Echo after the end", err)
			_, err = callEcho(ctx, pipelined.Result(), "gone")
			wantDisconnected(t, "echo on a pipelined Echo after the end", err)
			releasePipelined()
			held.Release()
			s.proxy.Release()
			s.end(t)
			eventually(t, "the server to release both Echo objects", func() bool { return impl.shutdowns.get() == 2 })
		})
	}
}

// makeEcho's method returns its capability only after the connection has
// broken (it waits for its ctx to end): the caller gets a disconnection
// error, and the capability that could not be delivered is released.
func TestMatrixCapabilityReturnedAfterBreak(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			leakCheck(t)
			entered := make(chan struct{}, 1)
			impl := &mxInit{hook: func(ctx context.Context) {
				entered <- struct{}{}
				<-ctx.Done()
			}}
			s := initSessionWith(t, impl)
			made, release := schema.Init(s.proxy).MakeEcho(testContext(t), nil)
			defer release()
			waitDone(t, "makeEcho to start", entered)
			side.close(s)
			_, err := made.Struct()
			wantDisconnected(t, "makeEcho across the break", err)
			_, err = callEcho(testContext(t), made.Result(), "never")
			wantDisconnected(t, "echo on the capability returned after the break", err)
			release()
			s.end(t)
			eventually(t, "makeEcho to make its Echo", func() bool { return impl.made.get() == 1 })
			eventually(t, "the undelivered Echo to be released", func() bool { return impl.shutdowns.get() == 1 })
		})
	}
}

// initSessionWith is a session whose bootstrap capability is impl; it
// makes one call so that the server's Conn is known.
func initSessionWith(t *testing.T, impl *mxInit) *mxSession {
	t.Helper()
	s := newMxSession(t, func(c *protocol.Conn) capnp.Client {
		return protocol.NewServer(schema.Init_Methods(nil, impl), impl, nil)
	})
	if _, err := peerHello(testContext(t), schema.Init(s.proxy)); err != nil {
		t.Fatalf("hello: %v", err)
	}
	s.awaitServer(t)
	return s
}

func peerHello(ctx context.Context, boot schema.Init) (int32, error) {
	f, release := boot.Hello(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return 0, err
	}
	info, err := res.Callee()
	if err != nil {
		return 0, err
	}
	return info.Pid(), nil
}

// A caller's context canceled mid-call: the call returns promptly with
// the context's error, the server's method sees its ctx canceled, and the
// connection carries on.
func TestCancelMidCall(t *testing.T) {
	leakCheck(t)
	impl := newMxSlow(nil)
	s, slow := slowSession(t, impl)
	ctx, cancel := context.WithCancel(testContext(t))
	f, release := sleepCall(ctx, slow, 0)
	defer release()
	waitDone(t, "sleep to start", impl.entered)
	cancel()
	if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled call: %v, want context.Canceled", err)
	}
	if err := waitErr(t, "the method to see the cancellation", impl.ended); !errors.Is(err, context.Canceled) {
		t.Errorf("the method saw %v, want context.Canceled", err)
	}
	if got, err := slowEcho(testContext(t), slow, "still"); err != nil || got != "still" {
		t.Errorf("echo after the cancellation = %q, %v", got, err)
	}
	if err := s.client.Err(); err != nil {
		t.Errorf("client connection ended: %v", err)
	}
	s.client.Close()
	s.end(t)
}

// A method that closes its Conn while the Conn is still being set up
// (the RPC connection serves calls at once, before newConn has recorded
// it) must close it before its results can go out: the caller gets a
// disconnection error. The hook holds the server's newConn at that point
// until the method has started and the call has ended (or for settle
// more, if the Close waits for newConn):
// Close used to find no RPC connection, only record why, and let the
// method's Return go out, so the call succeeded every time.
func TestMatrixCloseWhileConnStarting(t *testing.T) {
	leakCheck(t)
	entered, callDone := make(chan struct{}), make(chan struct{})
	defer protocol.SetNewConnHook(func(role string) {
		if role != "serve" {
			return
		}
		select {
		case <-entered:
		case <-time.After(patience):
			t.Error("the method did not start while the server's Conn was being set up")
		}
		select {
		case <-callDone:
		case <-time.After(settle):
		}
	})()
	var server atomic.Pointer[protocol.Conn]
	impl := newMxSlow(func(ctx context.Context) {
		close(entered)
		server.Load().Close()
	})
	close(impl.release) // return right after the hook
	a, b := socketpair(t)
	served := serve(t, testContext(t), b, func(c *protocol.Conn) capnp.Client {
		server.Store(c)
		return protocol.NewServer(testschema.Slow_Methods(nil, impl), impl, nil)
	}, nil)
	client, proxy := connect(t, a, nil)
	f, release := sleepCall(testContext(t), testschema.Slow(proxy), 0)
	_, err := f.Struct()
	close(callDone)
	release()
	proxy.Release()
	wantDisconnected(t, "the call whose method closed the starting connection", err)
	waitErr(t, "the method's end", impl.ended)
	waitDone(t, "client Done", client.Done())
	waitDone(t, "server Done", server.Load().Done())
	if err := waitErr(t, "Serve", served); err != nil && !errors.Is(err, protocol.ErrDisconnected) {
		t.Errorf("Serve = %v, want nil or an error wrapping ErrDisconnected", err)
	}
}
