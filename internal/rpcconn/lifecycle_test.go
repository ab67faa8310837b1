package rpcconn

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// Every call that fails because the connection went away fails with
// ErrDisconnected, whatever the moment: before it was sent, queued, in
// flight, or pipelined; whoever ended the connection.
func TestDisconnectErrorAtAnyMoment(t *testing.T) {
	for iter := 0; iter < 40; iter++ {
		ts := newTestServer()
		a, b := socketPair(t)
		srv := NewConn(b, &Options{BootstrapClient: ts.client()})
		cl := NewConn(a, nil)
		ctx := testCtx(t)
		boot := cl.Bootstrap(ctx)
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; ; i++ {
					var err error
					if g%2 == 0 {
						_, err = echo(ctx, schema.Echo(boot), "x")
					} else {
						f, rel := schema.Init(boot).MakeEcho(ctx, nil)
						_, err = echo(ctx, f.Result(), "y")
						rel()
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}(g)
		}
		time.Sleep(time.Duration(rand.Intn(3000)) * time.Microsecond)
		switch iter % 3 {
		case 0:
			srv.Close()
		case 1:
			cl.Close()
		case 2:
			b.Close() // the peer's socket vanishes under it
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if !IsDisconnected(err) || !errors.Is(err, ErrDisconnected) {
				t.Fatalf("iter %d: %v (%T) is not a disconnection", iter, err, err)
			}
		}
		boot.Release()
		cl.Close()
		srv.Close()
		<-cl.Done()
		<-srv.Done()
		close(ts.release)
	}
}

func TestCloseAndErr(t *testing.T) {
	a, b := socketPair(t)
	c := NewConn(a, nil)
	peer := NewConn(b, nil)
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
	c.Close()
	c.Close() // idempotent
	<-c.Done()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err = %v", c.Err())
	}
	<-peer.Done()
	if !isPeerGone(peer.Err()) {
		t.Fatalf("peer Err = %v", peer.Err())
	}
	boot := c.Bootstrap(context.Background())
	if err := boot.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := echo(context.Background(), schema.Echo(boot), "x")
	if !IsDisconnected(err) {
		t.Fatalf("call after close: %v", err)
	}
	boot.Release()
}

// Done waits for the calls the connection delivered: a server method
// still running when the peer goes keeps Done open until it returns (its
// context is canceled first).
func TestDoneWaitsForServedCalls(t *testing.T) {
	ts := newTestServer()
	a, b := socketPair(t)
	srv := NewConn(b, &Options{BootstrapClient: ts.client()})
	cl := NewConn(a, nil)
	boot := cl.Bootstrap(testCtx(t))
	f, rel := testschema.Slow(boot).Sleep(testCtx(t), func(p testschema.Slow_sleep_Params) error {
		p.SetMs(60_000)
		return nil
	})
	waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
	cl.Close()
	<-srv.Done()
	ts.mu.Lock()
	sleeping, canceled := ts.sleeping, ts.canceled
	ts.mu.Unlock()
	if sleeping != 0 || canceled != 1 {
		t.Fatalf("after Done: sleeping %d canceled %d", sleeping, canceled)
	}
	f.Struct()
	rel()
	boot.Release()
	<-cl.Done()
	close(ts.release)
}

func TestNoBootstrap(t *testing.T) {
	a, b := socketPair(t)
	srv := NewConn(b, nil)
	cl := NewConn(a, nil)
	defer func() { cl.Close(); srv.Close(); <-cl.Done(); <-srv.Done() }()
	boot := cl.Bootstrap(testCtx(t))
	defer boot.Release()
	_, err := echo(testCtx(t), schema.Echo(boot), "x")
	if err == nil || IsDisconnected(err) {
		t.Fatalf("err = %v", err)
	}
}

// Release and Finish bookkeeping: a capability sent three times is one
// export with three references; the peer's releases bring it to zero.
func TestExportRefcounts(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	for q := uint32(0); q < 3; q++ {
		if id := p.bootstrap(q); id != 0 {
			t.Fatalf("bootstrap %d exported as %d", q, id)
		}
		p.send(finishKeep(q))
	}
	waitFor(t, func() bool { return c.sizes().answers == 0 })
	c.mu.Lock()
	refs := c.exports[0].wireRefs
	c.mu.Unlock()
	if refs != 3 {
		t.Fatalf("wireRefs = %d", refs)
	}
	p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(0); r.SetReferenceCount(2) })
	p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(0); r.SetReferenceCount(1) })
	waitFor(t, func() bool { return c.sizes().exports == 0 })
	// A Finish with releaseResultCaps (the default) releases the result's caps.
	p.bootstrap(3)
	p.send(finish(3))
	waitFor(t, func() bool { return c.sizes().exports == 0 && c.sizes().answers == 0 })
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// The peer's promise resolves to a capability it hosts; calls made on the
// promise before and after reach it.
func TestResolvePromise(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	p.bootstrap(0)
	// Callback.call(depth 1, back = promise 40): the server calls back.
	setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetSenderPromise(40) })
	m := p.expect(rpccp.Message_Which_call)
	call, _ := m.Call()
	tgt, _ := call.Target()
	if tgt.Which() != rpccp.MessageTarget_Which_importedCap || tgt.ImportedCap() != 40 {
		t.Fatalf("callback target %v", tgt)
	}
	p.send(func(m rpccp.Message) {
		r, _ := m.NewResolve()
		r.SetPromiseId(40)
		d, _ := r.NewCap()
		d.SetSenderHosted(41)
	})
	qid := call.QuestionId()
	p.send(func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(qid)
		res, _ := r.NewResults()
		st, _ := capnp.NewStruct(res.Segment(), capnp.ObjectSize{DataSize: 8})
		testschema.Callback_call_Results(st).SetDepth(4)
		res.SetContent(st.ToPtr())
	})
	got := map[string]bool{}
	for !(got["return"] && got["release40"] && got["finish"]) {
		m, err := p.recv()
		if err != nil {
			t.Fatal(err, got)
		}
		switch m.Which() {
		case rpccp.Message_Which_return:
			r, _ := m.Return()
			if r.AnswerId() == 101 {
				res, err := r.Results()
				if err != nil {
					t.Fatalf("callback call failed: %v", r)
				}
				ct, _ := res.Content()
				if d := testschema.Callback_call_Results(ct.Struct()).Depth(); d != 5 {
					t.Fatalf("depth %d", d)
				}
				got["return"] = true
			}
		case rpccp.Message_Which_release:
			r, _ := m.Release()
			got[fmt.Sprint("release", r.Id())] = true
		case rpccp.Message_Which_finish:
			got["finish"] = true
		}
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// A promise that resolves to one of our own capabilities after calls went
// to it gets a Disembargo aimed at the promise, and the connection
// accepts the peer's loopback reply.
func TestResolveToLocalEmbargo(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	p.bootstrap(0)
	p.send(finishKeep(0))
	setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetSenderPromise(40) })
	m := p.expect(rpccp.Message_Which_call) // the server calls the promise
	call, _ := m.Call()
	qid := call.QuestionId()
	p.send(func(m rpccp.Message) {
		r, _ := m.NewResolve()
		r.SetPromiseId(40)
		d, _ := r.NewCap()
		d.SetReceiverHosted(0) // our own bootstrap object
	})
	m = p.expect(rpccp.Message_Which_disembargo)
	d, _ := m.Disembargo()
	tgt, _ := d.Target()
	if d.Context().Which() != rpccp.Disembargo_context_Which_senderLoopback ||
		tgt.Which() != rpccp.MessageTarget_Which_importedCap || tgt.ImportedCap() != 40 {
		t.Fatalf("disembargo %v", d)
	}
	emb := d.Context().SenderLoopback()
	p.send(func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(qid)
		res, _ := r.NewResults()
		st, _ := capnp.NewStruct(res.Segment(), capnp.ObjectSize{DataSize: 8})
		res.SetContent(st.ToPtr())
	})
	p.send(func(m rpccp.Message) {
		d, _ := m.NewDisembargo()
		t, _ := d.NewTarget()
		t.SetImportedCap(0)
		d.Context().SetReceiverLoopback(emb)
	})
	for {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		if r.AnswerId() == 101 {
			break
		}
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.embargoes) == 0
	})
}

// panicHook is a capability whose Recv panics in the caller's goroutine:
// the reader's recover must turn that into an aborted connection, logged,
// with the process carrying on and Done closing.
type panicHook struct{}

func (panicHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	panic("panicHook.Send")
}
func (panicHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	panic("panicHook.Recv")
}
func (panicHook) Brand() capnp.Brand { return capnp.Brand{} }
func (panicHook) Shutdown()          {}
func (panicHook) String() string     { return "panicHook" }

func TestBugBecomesAbort(t *testing.T) {
	a, b := socketPair(t)
	srv := NewConn(b, &Options{BootstrapClient: capnp.NewClient(panicHook{})})
	cl := NewConn(a, nil)
	defer func() { cl.Close(); <-cl.Done() }()
	boot := cl.Bootstrap(testCtx(t))
	defer boot.Release()
	_, err := echo(testCtx(t), schema.Echo(boot), "x")
	if !IsDisconnected(err) || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done did not close after a recovered bug")
	}
}

// Observe sees each message once, in each direction, on both sides.
func TestObserve(t *testing.T) {
	type seen struct {
		mu  sync.Mutex
		got []string
	}
	record := func(s *seen) func(bool, rpccp.Message) {
		return func(sent bool, m rpccp.Message) {
			dir := "recv"
			if sent {
				dir = "sent"
			}
			s.mu.Lock()
			s.got = append(s.got, dir+" "+m.Which().String())
			s.mu.Unlock()
		}
	}
	var cs, ss seen
	ts := newTestServer()
	a, b := socketPair(t)
	srv := NewConn(b, &Options{BootstrapClient: ts.client(), Observe: record(&ss)})
	cl := NewConn(a, &Options{Observe: record(&cs)})
	boot := cl.Bootstrap(testCtx(t))
	if _, err := echo(testCtx(t), schema.Echo(boot), "x"); err != nil {
		t.Fatal(err)
	}
	boot.Release()
	waitFor(t, func() bool {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return strings.Contains(fmt.Sprint(ss.got), "recv finish")
	})
	cl.Close()
	<-cl.Done()
	<-srv.Done()
	close(ts.release)
	has := func(s *seen, want ...string) {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		all := fmt.Sprint(s.got)
		for _, w := range want {
			if !strings.Contains(all, w) {
				t.Fatalf("%q not in %s", w, all)
			}
		}
	}
	has(&cs, "sent bootstrap", "sent call", "recv return", "sent finish")
	has(&ss, "recv bootstrap", "recv call", "sent return", "recv finish")
}

// A promise the peer never resolved breaks when the connection ends:
// Client.Resolve returns, and calls fail as disconnected (Resolve used to
// wait for ever).
func TestPromiseBrokenAtEnd(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	ctx := testCtx(t)
	boot := c.Bootstrap(ctx)
	defer boot.Release()
	m := p.expect(rpccp.Message_Which_bootstrap)
	b, _ := m.Bootstrap()
	qid := b.QuestionId()
	p.send(func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(qid)
		r.SetReleaseParamCaps(false)
		res, _ := r.NewResults()
		res.SetContent(capnp.NewInterface(res.Segment(), 0).ToPtr())
		ct, _ := res.NewCapTable(1)
		ct.At(0).SetSenderPromise(5)
	})
	p.expect(rpccp.Message_Which_finish)
	p.nc.Close()
	<-c.Done()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := boot.Resolve(rctx); err != nil {
		t.Fatalf("Resolve after the end: %v", err)
	}
	if _, err := echo(ctx, schema.Echo(boot), "x"); !IsDisconnected(err) {
		t.Fatalf("call after the end: %v, want a disconnection", err)
	}
}
