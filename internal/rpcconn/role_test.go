package rpcconn

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// hookServer serves Echo.echo through fn, inline when the connection lets
// it (TakeInline), as package mp's servers do.
type hookServer struct {
	fn     func(ctx context.Context, s string) (string, error)
	inline atomic.Int32
}

func (h *hookServer) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return SendHeld(ctx, h, s)
}

func (h *hookServer) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	if TakeInline(ctx) {
		h.inline.Add(1)
		h.serve(ctx, r)
	} else {
		go h.serve(ctx, r)
	}
	return FailedCaller(errors.New("hookServer: no pipelining"))
}

func (h *hookServer) serve(ctx context.Context, r capnp.Recv) {
	s, err := schema.Echo_echo_Params(r.Args).Echo()
	r.ReleaseArgs()
	if err == nil {
		s, err = h.fn(ctx, s)
	}
	if err == nil {
		var res capnp.Struct
		if res, err = r.Returner.AllocResults(capnp.ObjectSize{PointerCount: 1}); err == nil {
			err = schema.Echo_echo_Results(res).SetResult(s)
		}
	}
	r.Returner.PrepareReturn(err)
	r.Returner.Return()
	r.Returner.ReleaseResults()
}

func (h *hookServer) Brand() capnp.Brand { return capnp.Brand{} }
func (h *hookServer) Shutdown()          {}
func (h *hookServer) String() string     { return "hookServer" }

var echoMethod = capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0, InterfaceName: "Echo", MethodName: "echo"}

// directEcho calls Echo.echo on imp with a direct Call, as package mp's
// proxies do.
func directEcho(ctx context.Context, imp *Import, s string) (string, error) {
	dc, err := imp.NewCall(echoMethod, capnp.ObjectSize{PointerCount: 1}, false)
	if err != nil {
		return "", err
	}
	defer dc.Release()
	if err := schema.Echo_echo_Params(dc.Params()).SetEcho(s); err != nil {
		return "", err
	}
	if err := dc.Send(ctx); err != nil {
		return "", err
	}
	return schema.Echo_echo_Results(dc.Results()).Result()
}

// rolePair connects a client to a server serving h, and returns the
// client's import of it, for direct calls. patience is the client's
// (zero: the default); a long one keeps the client's own goroutine from
// taking the role back between calls, for tests that need a caller to
// hold it.
func rolePair(t *testing.T, h *hookServer, patience time.Duration) (cl, srv *Conn, imp *Import) {
	t.Helper()
	ctx := testCtx(t)
	cl, srv = connPair(t, &Options{readPatience: patience}, &Options{BootstrapClient: capnp.NewClient(h)})
	boot := cl.Bootstrap(ctx)
	t.Cleanup(boot.Release)
	if err := boot.Resolve(ctx); err != nil {
		t.Fatal(err)
	}
	if imp = ImportOf(boot); imp == nil {
		t.Fatal("the resolved bootstrap capability is not an import")
	}
	return cl, srv, imp
}

// blockedCall is a pair from rolePair (a long patience) whose server
// answers echo("block") only once gate is sent to or closed (it is
// closed when the test ends), with such a call in flight, made with
// callCtx: its method has started, and done gets the call's error.
type blockedCall struct {
	cl, srv *Conn
	imp     *Import
	gate    chan struct{}
	done    chan error
}

func startBlockedCall(t *testing.T, ctx, callCtx context.Context) *blockedCall {
	t.Helper()
	b := &blockedCall{gate: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan struct{}, 1)
	h := &hookServer{fn: func(_ context.Context, s string) (string, error) {
		if s == "block" {
			started <- struct{}{}
			<-b.gate
		}
		return s, nil
	}}
	b.cl, b.srv, b.imp = rolePair(t, h, time.Minute)
	t.Cleanup(func() { close(b.gate) })
	if _, err := directEcho(ctx, b.imp, "warm"); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := directEcho(callCtx, b.imp, "block")
		b.done <- err
	}()
	<-started
	return b
}

// holderIsCaller reports whether the goroutine reading c is a caller
// waiting for its Return.
func holderIsCaller(c *Conn) bool {
	c.role.mu.Lock()
	defer c.role.mu.Unlock()
	return c.role.holder != nil && c.role.holder.call != nil && c.role.state == roleReading
}

// A caller alone on the connection reads its own Return, and the server
// runs each call on the goroutine that read it.
func TestCallerReadsOwnReturn(t *testing.T) {
	ctx := testCtx(t)
	h := &hookServer{fn: func(_ context.Context, s string) (string, error) { return s, nil }}
	cl, srv, imp := rolePair(t, h, time.Minute)
	const n = 300
	for i := range n {
		want := string(rune('a' + i%26))
		got, err := directEcho(ctx, imp, want)
		if err != nil || got != want {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	// The first call's Return may be read by the connection's reader,
	// which then leaves the role to the caller.
	if own := cl.RoleStats().OwnReturns; own < n-1 {
		t.Errorf("callers read %d of %d Returns themselves, want at least %d", own, n, n-1)
	}
	if got := h.inline.Load(); got != n {
		t.Errorf("%d of %d calls ran inline", got, n)
	}
	if s := srv.RoleStats(); s.Inline != n {
		t.Errorf("server RoleStats.Inline = %d, want %d", s.Inline, n)
	}
}

// A caller reading for its Return whose context ends is pulled out of
// Read at once, although the Return does not come (the method ignores
// the cancellation); the next caller reads its own Return.
func TestReadingCallerCanceled(t *testing.T) {
	ctx := testCtx(t)
	cctx, cancel := context.WithCancel(ctx)
	b := startBlockedCall(t, ctx, cctx)
	cl, imp, gate, done := b.cl, b.imp, b.gate, b.done
	for !holderIsCaller(cl) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled call = %v, want context.Canceled", err)
		}
		t.Logf("the canceled call returned after %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("a caller reading for its Return still waits 5 s after its context was canceled")
	}
	// Another object would serve at once; this one is still blocked, so
	// the next call waits for it: let it go first.
	gate <- struct{}{}
	own := cl.RoleStats().OwnReturns
	if got, err := directEcho(ctx, imp, "after"); err != nil || got != "after" {
		t.Fatalf("call after the cancellation: %q, %v", got, err)
	}
	if cl.RoleStats().OwnReturns <= own {
		t.Log("the call after the cancellation was read by a connection goroutine")
	}
}

// A caller reading for its Return fails with the disconnection error
// promptly when either end closes, never with no error: its read may fail
// while the goroutine closing is still failing the calls (rounds of it).
// In a round where the connection's own goroutine stays in Read (it kept
// the role after the warm-up call's Return, as it may), the caller waits
// parked instead; the call must fail all the same, and most rounds must
// have the caller reading.
func TestReadingCallerDisconnected(t *testing.T) {
	for _, who := range []string{"client", "server"} {
		t.Run(who, func(t *testing.T) {
			const rounds = 100
			reading := 0
			for range rounds {
				if readingCallerDisconnected(t, who) {
					reading++
				}
				if t.Failed() {
					return
				}
			}
			if reading < rounds/2 {
				t.Errorf("the caller read for its own Return in %d rounds of %d", reading, rounds)
			}
		})
	}
}

// readingCallerDisconnected runs one round and reports whether the
// caller held the role when the connection ended.
func readingCallerDisconnected(t *testing.T, who string) (callerRead bool) {
	t.Run("round", func(t *testing.T) {
		ctx := testCtx(t)
		b := startBlockedCall(t, ctx, ctx)
		cl, srv, done := b.cl, b.srv, b.done
		for wait := time.Now().Add(time.Second); time.Now().Before(wait); {
			if callerRead = holderIsCaller(cl); callerRead {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("the call returned (%v) while its method still ran", err)
			case <-time.After(time.Millisecond):
			}
		}
		if who == "client" {
			cl.Close()
		} else {
			srv.Close()
		}
		select {
		case err := <-done:
			if !IsDisconnected(err) {
				t.Fatalf("call = %v, want a disconnection error", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a caller reading for its Return still waits 5 s after the connection ended")
		}
	})
	return callerRead
}

// A served call that blocks on the goroutine that read it does not stop
// the connection: another goroutine takes over reading (within
// readPatience), so a call that arrives meanwhile, here the one that
// unblocks the first, is served.
func TestBlockedInlineCallDoesNotWedge(t *testing.T) {
	ctx := testCtx(t)
	gate := make(chan struct{})
	started := make(chan struct{})
	h := &hookServer{fn: func(ctx context.Context, s string) (string, error) {
		switch s {
		case "wait":
			close(started)
			select {
			case <-gate:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		case "open":
			close(gate)
		}
		return s, nil
	}}
	_, srv, imp := rolePair(t, h, 0)
	done := make(chan error, 1)
	go func() {
		_, err := directEcho(ctx, imp, "wait")
		done <- err
	}()
	<-started
	start := time.Now()
	if _, err := directEcho(ctx, imp, "open"); err != nil {
		t.Fatal(err)
	}
	t.Logf("a call behind a blocked inline call was served after %v (patience %v)", time.Since(start), srv.patience)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := srv.RoleStats(); s.Takeovers == 0 {
		t.Errorf("no goroutine took over reading from the blocked one: %+v", s)
	}
}

// A caller reading for its Return whose context ends while a frame is
// half in (here the peer's Return for it, cut in the header or in the
// body) is pulled out of Read at once; a connection goroutine reads the
// rest of the frame where the caller stopped, and the connection carries
// on.
func TestReadingCallerCanceledMidFrame(t *testing.T) {
	for _, cut := range []string{"header", "body"} {
		t.Run(cut, func(t *testing.T) {
			ctx := testCtx(t)
			c, p, _ := newRawPair(t, &Options{readPatience: time.Minute})
			boot := c.Bootstrap(ctx)
			t.Cleanup(boot.Release)
			p.answerBootstrap()
			if err := boot.Resolve(ctx); err != nil {
				t.Fatal(err)
			}
			imp := ImportOf(boot)
			if imp == nil {
				t.Fatal("no import")
			}
			ret := func(qid uint32, s string) []byte {
				return buildFrame(func(m rpccp.Message) {
					r, _ := m.NewReturn()
					r.SetAnswerId(qid)
					r.SetReleaseParamCaps(false)
					r.SetNoFinishNeeded(true)
					res, _ := r.NewResults()
					st, _ := capnp.NewStruct(res.Segment(), capnp.ObjectSize{PointerCount: 1})
					schema.Echo_echo_Results(st).SetResult(s)
					res.SetContent(st.ToPtr())
				})
			}
			call := func(cctx context.Context, s string) (<-chan error, uint32) {
				done := make(chan error, 1)
				go func() {
					got, err := directEcho(cctx, imp, s)
					if err == nil && got != s {
						err = errors.New("got " + got)
					}
					done <- err
				}()
				m := p.expect(rpccp.Message_Which_call)
				cm, _ := m.Call()
				return done, cm.QuestionId()
			}
			// A first call: the connection's goroutine reads its Return,
			// and leaves the role to callers after it.
			done, qid := call(ctx, "warm")
			p.write(ret(qid, "warm"))
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			cctx, cancel := context.WithCancel(ctx)
			done, qid = call(cctx, "late")
			for !holderIsCaller(c) {
				time.Sleep(time.Millisecond)
			}
			frame := ret(qid, "late")
			split := 3
			if cut == "body" {
				split = len(frame) - 8
			}
			p.write(frame[:split])
			time.Sleep(20 * time.Millisecond) // the caller reads them, and waits for more
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("canceled call = %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a caller reading in the middle of a frame still waits 5 s after its context was canceled")
			}
			f := p.expect(rpccp.Message_Which_finish)
			if fm, _ := f.Finish(); fm.QuestionId() != qid {
				t.Fatalf("Finish for question %d, want %d", fm.QuestionId(), qid)
			}
			p.write(frame[split:])

			done, qid = call(ctx, "after")
			p.write(ret(qid, "after"))
			if err := <-done; err != nil {
				t.Fatalf("call after the cut frame: %v", err)
			}
		})
	}
}

// A caller's read fails (the peer closed) while another goroutine is
// ending the connection (Close) and has not failed the calls yet: the
// caller's own shutdown returns at once, and the caller waits for the
// end to fail its call, rather than returning no error and no results.
func TestReadingCallerFailsDuringClose(t *testing.T) {
	ctx := testCtx(t)
	b := startBlockedCall(t, ctx, ctx)
	cl, srv, done := b.cl, b.srv, b.done
	for !holderIsCaller(cl) {
		time.Sleep(time.Millisecond)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	testShutdownHook = func(c *Conn) {
		if c == cl {
			close(paused)
			<-resume
		}
	}
	t.Cleanup(func() { testShutdownHook = nil })
	closed := make(chan struct{})
	go func() {
		cl.Close()
		close(closed)
	}()
	<-paused
	srv.Close() // the caller's read fails
	select {
	case err := <-done:
		t.Fatalf("the call returned (%v) before the end failed it", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(resume)
	<-closed
	select {
	case err := <-done:
		if !IsDisconnected(err) {
			t.Fatalf("call = %v, want a disconnection error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call still waits 5 s after the end")
	}
}
