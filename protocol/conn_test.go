package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

func TestEcho(t *testing.T) {
	ctx := testContext(t)
	clog, clogBuf := newLogger(t, "client")
	slg, slogBuf := newLogger(t, "server")
	a, b := socketpair(t)
	served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: slg})
	conn, client := connect(t, a, &protocol.Options{Logger: clog})

	boot := schema.Init(client)
	echo, releaseEcho := makeEcho(ctx, boot)
	big := strings.Repeat("0123456789abcdef", 1<<16)
	for _, in := range []string{"hello", "", big} {
		got, err := callEcho(ctx, echo, in)
		if err != nil {
			t.Fatalf("echo(%d bytes): %v", len(in), err)
		}
		if got != in {
			t.Fatalf("echo(%d bytes) returned %d bytes", len(in), len(got))
		}
	}
	releaseEcho()
	boot.Release()

	if err := conn.Err(); err != nil {
		t.Errorf("Err while open = %v, want nil", err)
	}
	conn.Close()
	if !errors.Is(conn.Err(), protocol.ErrClosed) {
		t.Errorf("Err right after Close = %v, want ErrClosed", conn.Err())
	}
	if err := waitErr(t, "Serve", served); err != nil {
		t.Errorf("Serve = %v, want nil after the client closed", err)
	}
	waitDone(t, "client Done", conn.Done())
	if !errors.Is(conn.Err(), protocol.ErrClosed) {
		t.Errorf("client Err = %v, want ErrClosed", conn.Err())
	}

	// A normal session and close log nothing at Error, and the
	// connection's opening and end at Info with the reason.
	for name, b := range map[string]*syncbuf.Buffer{"client": clogBuf, "server": slogBuf} {
		if l := b.Lines("level=ERROR"); len(l) > 0 {
			t.Errorf("%s logged errors: %q", name, l)
		}
		if len(b.Lines("level=INFO", "connection opened", "conn.id=")) != 1 {
			t.Errorf("%s: no 'connection opened' line with conn.id", name)
		}
	}
	if len(clogBuf.Lines("level=INFO", "connection closed", `reason="we closed"`, "process=client")) != 1 {
		t.Errorf("client: no 'connection closed' line with reason=we closed")
	}
	if len(slogBuf.Lines("level=INFO", "connection closed", `reason="peer closed"`)) != 1 {
		t.Errorf("server: no 'connection closed' line with reason=peer closed")
	}
}

func TestServeEndsWithContext(t *testing.T) {
	ctx := testContext(t)
	serveCtx, cancel := context.WithCancel(ctx)
	a, b := socketpair(t)
	var server atomic.Pointer[protocol.Conn]
	served := serve(t, serveCtx, b, func(c *protocol.Conn) capnp.Client {
		server.Store(c)
		return newInit(false)(c)
	}, nil)
	conn, client := connect(t, a, nil)
	boot := schema.Init(client)
	defer boot.Release()
	echo, releaseEcho := makeEcho(ctx, boot)
	defer releaseEcho()
	if _, err := callEcho(ctx, echo, "before"); err != nil {
		t.Fatalf("echo: %v", err)
	}

	cancel()
	if err := waitErr(t, "Serve", served); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve = %v, want context.Canceled", err)
	}
	if err := server.Load().Err(); !errors.Is(err, protocol.ErrClosed) {
		t.Errorf("server Err = %v, want ErrClosed", err)
	}
	waitDone(t, "client Done", conn.Done())
	if err := conn.Err(); !errors.Is(err, protocol.ErrDisconnected) {
		t.Errorf("client Err = %v, want one wrapping ErrDisconnected", err)
	}
	_, err := callEcho(ctx, echo, "after")
	if !protocol.IsDisconnected(err) {
		t.Errorf("echo after the server ended: %v, want an error for which IsDisconnected is true", err)
	}
}

// A call pending when the server closes fails, and so do later calls on
// every capability of the connection; none hangs.
func TestCallsFailWhenServerCloses(t *testing.T) {
	ctx := testContext(t)
	a, b := socketpair(t)
	slow := newSlow()
	var server atomic.Pointer[protocol.Conn]
	served := serve(t, ctx, b, func(c *protocol.Conn) capnp.Client {
		server.Store(c)
		return protocol.NewServer(testschema.Slow_Methods(nil, slow), slow, nil)
	}, nil)
	conn, client := connect(t, a, nil)
	s := testschema.Slow(client)
	defer s.Release()

	f, release := s.Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
		p.SetMs(uint32(patience / time.Millisecond))
		return nil
	})
	defer release()
	waitDone(t, "sleep to start", slow.entered)

	server.Load().Close()
	if _, err := f.Struct(); !protocol.IsDisconnected(err) {
		t.Errorf("pending sleep: %v, want an error for which IsDisconnected is true", err)
	}
	if _, err := slowEcho(ctx, s, "after"); !protocol.IsDisconnected(err) {
		t.Errorf("echo after close: %v, want an error for which IsDisconnected is true", err)
	}
	if err := waitErr(t, "Serve", served); err != nil {
		t.Errorf("Serve = %v, want nil after Close", err)
	}
	waitDone(t, "client Done", conn.Done())
	if err := conn.Err(); !errors.Is(err, protocol.ErrDisconnected) || errors.Is(err, protocol.ErrClosed) {
		t.Errorf("client Err = %v, want one wrapping ErrDisconnected", err)
	}
	if err := server.Load().Err(); !errors.Is(err, protocol.ErrClosed) {
		t.Errorf("server Err = %v, want ErrClosed", err)
	}
}

// A method may close its own connection; Close does not wait for it.
func TestCloseFromMethod(t *testing.T) {
	ctx := testContext(t)
	a, b := socketpair(t)
	served := serve(t, ctx, b, func(c *protocol.Conn) capnp.Client {
		slow := newSlow()
		slow.conn = c
		return protocol.NewServer(testschema.Slow_Methods(nil, slow), slow, nil)
	}, nil)
	conn, client := connect(t, a, nil)
	s := testschema.Slow(client)
	defer s.Release()
	if _, err := slowEcho(ctx, s, "close"); !protocol.IsDisconnected(err) {
		t.Errorf("echo that closes: %v, want an error for which IsDisconnected is true", err)
	}
	if err := waitErr(t, "Serve", served); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	waitDone(t, "client Done", conn.Done())
}

// One connection's object serves another call while a call that
// called call.Go() blocks.
func TestBlockedCallDoesNotStallSameObject(t *testing.T) {
	ctx := testContext(t)
	a, b := socketpair(t)
	slow := newSlow()
	serve(t, ctx, b, func(c *protocol.Conn) capnp.Client {
		return protocol.NewServer(testschema.Slow_Methods(nil, slow), slow, nil)
	}, nil)
	_, client := connect(t, a, nil)
	s := testschema.Slow(client)
	defer s.Release()

	f, release := s.Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
		p.SetMs(uint32(patience / time.Millisecond))
		return nil
	})
	defer release()
	waitDone(t, "sleep to start", slow.entered)
	if got, err := slowEcho(ctx, s, "meanwhile"); err != nil || got != "meanwhile" {
		t.Fatalf("echo during sleep = %q, %v", got, err)
	}
	close(slow.release)
	if _, err := f.Struct(); err != nil {
		t.Errorf("sleep: %v", err)
	}
}

// callbackServer implements testschema.Callback: call(depth, back) calls
// back.call(depth-1, self) until depth reaches zero.
type callbackServer struct {
	self  capnp.WeakClient
	calls atomic.Int32
}

func newCallback() (*callbackServer, testschema.Callback) {
	s := &callbackServer{}
	c := protocol.NewServer(testschema.Callback_Methods(nil, s), s, nil)
	s.self = c.WeakRef()
	return s, testschema.Callback(c)
}

func (s *callbackServer) Call(ctx context.Context, call testschema.Callback_call) error {
	call.Go() // it calls out and waits: let the object take other calls
	s.calls.Add(1)
	depth := call.Args().Depth()
	if depth > 0 {
		self, ok := s.self.AddRef()
		if !ok {
			return errors.New("callback released")
		}
		back := call.Args().Back()
		f, release := back.Call(ctx, func(p testschema.Callback_call_Params) error {
			p.SetDepth(depth - 1)
			return p.SetBack(testschema.Callback(self))
		})
		defer release()
		select {
		case <-f.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		res, err := f.Struct()
		if err != nil {
			return err
		}
		depth = res.Depth()
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetDepth(depth)
	return nil
}

func TestCallbacksIntoTheCaller(t *testing.T) {
	ctx := testContext(t)
	a, b := socketpair(t)
	var remote *callbackServer
	serve(t, ctx, b, func(c *protocol.Conn) capnp.Client {
		var client testschema.Callback
		remote, client = newCallback()
		return capnp.Client(client)
	}, nil)
	_, proxy := connect(t, a, nil)
	cb := testschema.Callback(proxy)
	defer cb.Release()
	local, localClient := newCallback()
	defer localClient.Release()

	const depth = 5
	f, release := cb.Call(ctx, func(p testschema.Callback_call_Params) error {
		p.SetDepth(depth)
		return p.SetBack(localClient.AddRef())
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("call(%d): %v", depth, err)
	}
	if res.Depth() != 0 {
		t.Errorf("call(%d) = %d, want 0", depth, res.Depth())
	}
	// The server ran depths 5, 3, 1 and this side 4, 2, 0.
	if r, l := remote.calls.Load(), local.calls.Load(); r != 3 || l != 3 {
		t.Errorf("calls: %d on the server, %d here; want 3 and 3", r, l)
	}
}

// A panic in a method reaches the caller as an error, is logged with its
// stack, and ends the connection that delivered the call, whose state is
// unknown; another connection of the same process carries on.
func TestPanicInMethod(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	a, b := socketpair(t)
	served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log})
	conn, client := connect(t, a, nil)
	boot := schema.Init(client)
	defer boot.Release()
	echo, releaseEcho := makeEcho(ctx, boot)
	defer releaseEcho()

	other, otherB := socketpair(t)
	serve(t, ctx, otherB, newInit(false), &protocol.Options{Logger: log})
	_, otherClient := connect(t, other, nil)
	otherBoot := schema.Init(otherClient)
	defer otherBoot.Release()
	otherEcho, releaseOther := makeEcho(ctx, otherBoot)
	defer releaseOther()

	if _, err := callEcho(ctx, echo, "panic"); err == nil {
		t.Fatal("echo(panic) succeeded")
	}
	waitDone(t, "the panicking connection to end", conn.Done())
	if err := waitErr(t, "Serve", served); !errors.Is(err, protocol.ErrDisconnected) {
		t.Errorf("Serve after a panic = %v, want an error wrapping ErrDisconnected", err)
	}
	if _, err := callEcho(ctx, echo, "after"); !protocol.IsDisconnected(err) {
		t.Errorf("echo after the panic = %v, want a disconnection error", err)
	}
	if got, err := callEcho(ctx, otherEcho, "still there"); err != nil || got != "still there" {
		t.Fatalf("echo on another connection = %q, %v", got, err)
	}
	if lines := logBuf.Lines("level=ERROR", "panic in method", "method=Echo.echo", "echo asked to panic", "stack=", "conn.id="); len(lines) != 1 {
		t.Errorf("want 1 panic line with method, value, stack and conn; got %d", len(lines))
	}
	if lines := logBuf.Lines("closing the connection after a panic", "method=Echo.echo"); len(lines) != 1 {
		t.Errorf("want 1 line saying the connection closes; got %d", len(lines))
	}
}

// DebugCalls logs each call made and served through generated code, with
// its method, duration and error; NewServer's methods log "call run".
func TestDebugCalls(t *testing.T) {
	ctx := testContext(t)
	clog, clogBuf := newLogger(t, "client")
	slg, slogBuf := newLogger(t, "server")
	a, b := socketpair(t)
	serve(t, ctx, b, func(*protocol.Conn) capnp.Client {
		return mptestschema.MakerInterface.Capnp(&genMaker{})
	}, &protocol.Options{Logger: slg, DebugCalls: true})
	_, client := connect(t, a, &protocol.Options{Logger: clog, DebugCalls: true})
	maker := mptestschema.MakerInterface.FromCapnp(client)
	defer mp.Release(maker)
	e, err := maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	if _, err := e.Echo(ctx, "hi"); err != nil {
		t.Fatal(err)
	}
	if err := maker.Fail(ctx, "boom"); err == nil {
		t.Fatal("fail succeeded")
	}
	eventually(t, "call lines", func() bool {
		return len(slogBuf.Lines("level=DEBUG", "call served", "method=Echo.echo", "duration=")) == 1 &&
			len(clogBuf.Lines("level=DEBUG", "call made", "method=Echo.echo", "duration=", "conn.id=")) == 1 &&
			len(slogBuf.Lines("level=DEBUG", "call served", "method=Maker.makeEcho")) == 1 &&
			len(clogBuf.Lines("level=DEBUG", "call made", "method=Maker.fail", "err=", "failing as asked: boom")) == 1 &&
			len(slogBuf.Lines("level=DEBUG", "call served", "method=Maker.fail", "err=", "failing as asked: boom")) == 1
	})

	// Methods served through NewServer (go-capnp's generated API) log
	// "call run".
	slow := newSlow()
	a2, b2 := socketpair(t)
	serve(t, ctx, b2, func(*protocol.Conn) capnp.Client {
		return protocol.NewServer(testschema.Slow_Methods(nil, slow), slow, &protocol.ServerOptions{Logger: slg, DebugCalls: true})
	}, &protocol.Options{Logger: slg, DebugCalls: true})
	_, slowClient := connect(t, a2, nil)
	defer slowClient.Release()
	if _, err := slowEcho(ctx, testschema.Slow(slowClient), "x"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Slow.echo line", func() bool {
		return len(slogBuf.Lines("call run", "method=Slow.echo")) == 1
	})
}

// The interceptor of Options runs around the calls made and served, on
// both sides, and may refuse one.
func TestInterceptor(t *testing.T) {
	ctx := testContext(t)
	var mu sync.Mutex
	var seen []string
	refuse := errors.New("refused by the interceptor")
	icept := func(ctx context.Context, info *mp.CallInfo, next func(context.Context) error) error {
		side := "made"
		if info.Server {
			side = "served"
		}
		if _, ok := info.Peer().(*protocol.Conn); !ok {
			return fmt.Errorf("peer is %T, want *protocol.Conn", info.Peer())
		}
		mu.Lock()
		seen = append(seen, side+" "+displayName(info))
		mu.Unlock()
		if info.Server && info.Method.MethodName == "fail" {
			return refuse
		}
		return next(ctx)
	}
	a, b := socketpair(t)
	serve(t, ctx, b, func(*protocol.Conn) capnp.Client {
		return mptestschema.MakerInterface.Capnp(&genMaker{})
	}, &protocol.Options{Interceptor: icept})
	_, client := connect(t, a, &protocol.Options{Interceptor: icept})
	maker := mptestschema.MakerInterface.FromCapnp(client)
	defer mp.Release(maker)
	if err := maker.Fail(ctx, ""); err == nil || err.Error() != refuse.Error() {
		t.Fatalf("fail = %v, want the interceptor's refusal", err)
	}
	e, err := maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	if got, err := e.Echo(ctx, "through"); err != nil || got != "through" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"made Maker.fail", "served Maker.fail", "served Maker.makeEcho", "made Echo.echo", "served Echo.echo"} {
		if !slices.Contains(seen, want) {
			t.Errorf("interceptor did not see %q (saw %q)", want, seen)
		}
	}
}

func displayName(info *mp.CallInfo) string {
	return info.Method.InterfaceName + "." + info.Method.MethodName
}

// genMaker implements mptestschema.Maker: Fail fails with its code.
type genMaker struct {
	mptestschema.UnimplementedMaker
}

func (*genMaker) MakeEcho(context.Context) (mptestschema.Echo, error) { return genEcho{}, nil }

func (*genMaker) Fail(_ context.Context, code string) error {
	if code == "" {
		return nil
	}
	return fmt.Errorf("failing as asked: %s", code)
}

type genEcho struct{}

func (genEcho) Echo(_ context.Context, s string) (string, error) { return s, nil }

func TestIsDisconnected(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("other"), false},
		{context.Canceled, false},
		{protocol.ErrDisconnected, true},
		{capnp.Disconnected("gone"), true},
		{errors.Join(errors.New("x"), capnp.Disconnected("gone")), true},
	}
	for _, c := range cases {
		if got := protocol.IsDisconnected(c.err); got != c.want {
			t.Errorf("IsDisconnected(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
