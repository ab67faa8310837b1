package rpcconn

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	"capnproto.org/go/capnp/v3/server"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// socketPair returns the two ends of a unix stream socketpair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conv(fds[0]), conv(fds[1])
}

// testServer serves Init.makeEcho, Echo.echo, Slow.sleep, Slow.echo and
// Callback.call on one object, so one bootstrap capability can be cast
// to each interface. It is built with server.Method so that methods
// added to the schemas by others do not break these tests.
type testServer struct {
	mu       sync.Mutex
	sleeping int
	canceled int
	release  chan struct{} // closed to end every sleep
}

func newTestServer() *testServer { return &testServer{release: make(chan struct{})} }

func (ts *testServer) client() capnp.Client {
	return capnp.NewClient(server.New(ts.methods(), ts, nil))
}

func (ts *testServer) methods() []server.Method {
	return []server.Method{
		{Method: capnp.Method{InterfaceID: schema.Init_TypeID, MethodID: 0, InterfaceName: "Init", MethodName: "makeEcho"},
			Impl: func(ctx context.Context, call *server.Call) error {
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				e := capnp.NewClient(server.New(ts.methods(), ts, nil))
				return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(e)).ToPtr())
			}},
		{Method: capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0, InterfaceName: "Echo", MethodName: "echo"},
			Impl: func(ctx context.Context, call *server.Call) error {
				s, err := schema.Echo_echo_Params(call.Args()).Echo()
				if err != nil {
					return err
				}
				if s == "fail" {
					return errors.New("echo refused")
				}
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				return schema.Echo_echo_Results(res).SetResult(s)
			}},
		{Method: capnp.Method{InterfaceID: testschema.Slow_TypeID, MethodID: 0, InterfaceName: "Slow", MethodName: "sleep"},
			Impl: func(ctx context.Context, call *server.Call) error {
				call.Go()
				ms := testschema.Slow_sleep_Params(call.Args()).Ms()
				ts.mu.Lock()
				ts.sleeping++
				ts.mu.Unlock()
				defer func() {
					ts.mu.Lock()
					ts.sleeping--
					ts.mu.Unlock()
				}()
				select {
				case <-ts.release:
				case <-time.After(time.Duration(ms) * time.Millisecond):
				case <-ctx.Done():
					ts.mu.Lock()
					ts.canceled++
					ts.mu.Unlock()
					return ctx.Err()
				}
				return nil
			}},
		{Method: capnp.Method{InterfaceID: testschema.Slow_TypeID, MethodID: 1, InterfaceName: "Slow", MethodName: "echo"},
			Impl: func(ctx context.Context, call *server.Call) error {
				s, err := testschema.Slow_echo_Params(call.Args()).S()
				if err != nil {
					return err
				}
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				return testschema.Slow_echo_Results(res).SetS(s)
			}},
		{Method: capnp.Method{InterfaceID: testschema.Callback_TypeID, MethodID: 0, InterfaceName: "Callback", MethodName: "call"},
			Impl: callbackImpl},
	}
}

// callbackImpl implements Callback.call: at depth zero it returns; above,
// it calls back.call(depth-1, a new callback of its own).
func callbackImpl(ctx context.Context, call *server.Call) error {
	call.Go()
	args := testschema.Callback_call_Params(call.Args())
	d := args.Depth()
	res, err := call.AllocResults(capnp.ObjectSize{DataSize: 8})
	if err != nil {
		return err
	}
	if d == 0 {
		testschema.Callback_call_Results(res).SetDepth(0)
		return nil
	}
	back := args.Back()
	f, rel := back.Call(ctx, func(p testschema.Callback_call_Params) error {
		p.SetDepth(d - 1)
		return p.SetBack(newCallback())
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return err
	}
	testschema.Callback_call_Results(res).SetDepth(r.Depth() + 1)
	return nil
}

func newCallback() testschema.Callback {
	return testschema.Callback(capnp.NewClient(server.New([]server.Method{
		{Method: capnp.Method{InterfaceID: testschema.Callback_TypeID, MethodID: 0}, Impl: callbackImpl},
	}, nil, nil)))
}

// A peer is one end of a connection under test, ours or go-capnp's.
type peer interface {
	bootstrap(ctx context.Context) capnp.Client
	close()
}

type ourPeer struct{ c *Conn }

func (p ourPeer) bootstrap(ctx context.Context) capnp.Client { return p.c.Bootstrap(ctx) }
func (p ourPeer) close() {
	p.c.Close()
	<-p.c.Done()
}

type theirPeer struct{ c *rpc.Conn }

func (p theirPeer) bootstrap(ctx context.Context) capnp.Client { return p.c.Bootstrap(ctx) }
func (p theirPeer) close() {
	p.c.Close()
	<-p.c.Done()
}

// pairKinds are the combinations tested: client side, then server side.
var pairKinds = []struct {
	name                 string
	ourClient, ourServer bool
}{
	{"ours-ours", true, true},
	{"ours-gocapnp", true, false},
	{"gocapnp-ours", false, true},
}

// newPair connects a client to a server offering ts's object.
func newPair(t testing.TB, ourClient, ourServer bool, boot capnp.Client) (client, srv peer) {
	t.Helper()
	a, b := socketPair(t)
	if ourServer {
		srv = ourPeer{NewConn(b, &Options{BootstrapClient: boot})}
	} else {
		srv = theirPeer{rpc.NewConn(transport.NewStream(b), &rpc.Options{BootstrapClient: boot})}
	}
	if ourClient {
		client = ourPeer{NewConn(a, nil)}
	} else {
		client = theirPeer{rpc.NewConn(transport.NewStream(a), nil)}
	}
	t.Cleanup(func() {
		client.close()
		srv.close()
	})
	return client, srv
}

// connPair connects a client Conn to a server Conn over a socketpair,
// with the options given (nil: the defaults); the test's cleanup closes
// both and waits for their ends.
func connPair(t testing.TB, clientOpts, serverOpts *Options) (cl, srv *Conn) {
	t.Helper()
	a, b := socketPair(t)
	srv = NewConn(b, serverOpts)
	cl = NewConn(a, clientOpts)
	t.Cleanup(func() {
		cl.Close()
		srv.Close()
		<-cl.Done()
		<-srv.Done()
	})
	return cl, srv
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
