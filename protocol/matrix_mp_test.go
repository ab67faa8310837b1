package protocol_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// The disconnect matrix of matrix_test.go on the generated path: the
// client calls through mpgen's proxies (package mp, which calls rpcconn
// directly) and the server is mptestschema's Maker served by mp. The
// sessions are matrix_test.go's (protocol.Connect and protocol.Serve on a
// socketpair, a cleanup hook on each Conn and on the bootstrap proxy), so
// that each case ends as there: both connections over, every hook run
// once, no goroutine, descriptor or proxy (mptest.CheckLeaks) left
// behind. Every call that fails because of the end fails with an error
// for which errors.Is(err, mp.ErrDisconnected) holds, whichever side went
// away.

// mpmMaker implements mptestschema.Maker for the matrix. Its echoes'
// echo("wait") reports that it started (entered), runs hook, then waits
// until release is closed or its ctx ends, and reports its ctx's error
// (ended; nil if released). makeEcho runs makeHook first. The echoes it
// makes count their release (mp.Releaser). With concurrent, it and its
// echoes take calls concurrently (mp.Concurrent); else one at a time.
type mpmMaker struct {
	mptestschema.UnimplementedMaker
	concurrent bool
	hook       func(ctx context.Context)
	makeHook   func(ctx context.Context)

	entered chan struct{}
	ended   chan error
	release chan struct{}
	backErr chan error // errors of its callbacks' calls back

	made, released counter // echoes made, and released by every holder

	mu   sync.Mutex
	kept []mptestschema.Echo // identity's arguments, retained
}

func newMpmMaker() *mpmMaker {
	return &mpmMaker{entered: make(chan struct{}, 64), ended: make(chan error, 64), release: make(chan struct{}), backErr: make(chan error, 64)}
}

func (m *mpmMaker) TakesConcurrentCalls() bool { return m.concurrent }

func (m *mpmMaker) MakeEcho(ctx context.Context) (mptestschema.Echo, error) {
	if m.makeHook != nil {
		m.makeHook(ctx)
	}
	m.made.inc()
	return &mpmEcho{m: m}, nil
}

// Callback returns a callback that calls back (depth-1) and reports the
// error of that call (backErr).
func (m *mpmMaker) Callback(ctx context.Context) (mptestschema.Callback, error) {
	return &mpmCallback{m: m}, nil
}

type mpmCallback struct{ m *mpmMaker }

func (c *mpmCallback) Call(ctx context.Context, depth uint32, back mptestschema.Callback) (uint32, error) {
	if depth == 0 {
		return 0, nil
	}
	d, err := back.Call(ctx, depth-1, c)
	c.m.backErr <- err
	return d, err
}

// Sink returns a sink whose push of 1 reports that it started (entered)
// and then waits for its ctx to end.
func (m *mpmMaker) Sink(ctx context.Context) (mptestschema.Sink, error) {
	return &mpmSink{m: m}, nil
}

// Identity keeps a reference of its own to its argument (released by
// releaseKept), and returns it.
func (m *mpmMaker) Identity(ctx context.Context, e mptestschema.Echo) (mptestschema.Echo, error) {
	m.mu.Lock()
	m.kept = append(m.kept, mp.Retain(e))
	m.mu.Unlock()
	return e, nil
}

func (m *mpmMaker) releaseKept() {
	m.mu.Lock()
	kept := m.kept
	m.kept = nil
	m.mu.Unlock()
	for _, e := range kept {
		mp.Release(e)
	}
}

func (m *mpmMaker) Count(_ context.Context, items []mptestschema.Item) (mptestschema.Maker_Count_Results, error) {
	var sum uint64
	for _, it := range items {
		sum += it.Value
	}
	return mptestschema.Maker_Count_Results{N: uint32(len(items)), Sum: sum}, nil
}

type mpmEcho struct{ m *mpmMaker }

func (e *mpmEcho) Echo(ctx context.Context, s string) (string, error) {
	if s != "wait" {
		return s, nil
	}
	m := e.m
	m.entered <- struct{}{}
	if m.hook != nil {
		m.hook(ctx)
	}
	var err error
	select {
	case <-m.release:
	case <-ctx.Done():
		err = ctx.Err()
	}
	m.ended <- err
	return s, err
}

func (e *mpmEcho) CapabilityReleased()        { e.m.released.inc() }
func (e *mpmEcho) TakesConcurrentCalls() bool { return e.m.concurrent }

type mpmSink struct {
	mptestschema.UnimplementedSink
	m *mpmMaker
}

func (s *mpmSink) Push(ctx context.Context, n uint32) error {
	if n != 1 {
		return nil
	}
	s.m.entered <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// mpmBlockingCallback is a Callback of the client's own whose call
// reports that it started and waits for its ctx to end, and reports its
// error; it counts its release.
type mpmBlockingCallback struct {
	entered  chan struct{}
	ended    chan error
	released counter
}

func (c *mpmBlockingCallback) Call(ctx context.Context, _ uint32, _ mptestschema.Callback) (uint32, error) {
	c.entered <- struct{}{}
	<-ctx.Done()
	c.ended <- ctx.Err()
	return 0, ctx.Err()
}

func (c *mpmBlockingCallback) CapabilityReleased() { c.released.inc() }

// mpmLocal is an Echo of the client's own, passed to the server: it
// counts its release.
type mpmLocal struct{ released counter }

func (*mpmLocal) Echo(_ context.Context, s string) (string, error) { return s, nil }
func (l *mpmLocal) CapabilityReleased()                            { l.released.inc() }

// mpmSession is a matrix session (as newMxSession makes them) whose
// bootstrap capability is m, served through mp, with the client's Maker
// proxy for it and a record of what the client sent.
type mpmSession struct {
	*mxSession
	maker *mptestschema.MakerClient
	sent  *cutConn // the client's socket, recording, never cut
}

// newMpmSession starts a session and makes one call, so that the
// server's Conn is known.
func newMpmSession(t *testing.T, m *mpmMaker) *mpmSession {
	t.Helper()
	s := &mpmSession{mxSession: &mxSession{servers: make(chan *protocol.Conn, 1)}}
	a, b := socketpair(t)
	s.sent = newCutConn(a)
	s.sent.record = true
	s.served = serve(t, testContext(t), b, func(c *protocol.Conn) capnp.Client {
		c.AddCleanup(s.serverCleanups.inc)
		s.servers <- c
		return mptestschema.MakerInterface.Capnp(m)
	}, nil)
	s.client, s.proxy = connect(t, s.sent, nil)
	t.Cleanup(s.proxy.Release)
	s.client.AddCleanup(s.clientCleanups.inc)
	if err := protocol.AddCleanup(s.proxy, s.proxyCleanups.inc); err != nil {
		t.Fatalf("AddCleanup on the proxy: %v", err)
	}
	maker, ok := mptestschema.MakerInterface.FromCapnp(s.proxy.AddRef()).(*mptestschema.MakerClient)
	if !ok {
		t.Fatal("the bootstrap capability is not a proxy")
	}
	s.maker = maker
	t.Cleanup(func() { mp.Release(s.maker) })
	if _, err := s.maker.Count(testContext(t), nil); err != nil {
		t.Fatalf("first count: %v", err)
	}
	s.awaitServer(t)
	return s
}

// callsSent counts the Call messages the client has written whole.
func (s *mpmSession) callsSent() int {
	s.sent.mu.Lock()
	stream := bytes.Clone(s.sent.written)
	s.sent.mu.Unlock()
	n := 0
	dec := capnp.NewDecoder(bytes.NewReader(stream))
	for {
		msg, err := dec.Decode()
		if err != nil {
			return n
		}
		if m, err := rpccp.ReadRootMessage(msg); err == nil && m.Which() == rpccp.Message_Which_call {
			n++
		}
	}
}

// end releases the Maker proxy and ends as mxSession.end does.
func (s *mpmSession) end(t *testing.T) {
	t.Helper()
	mp.Release(s.maker)
	s.mxSession.end(t)
}

// mpmStart checks leaks (goroutines, descriptors, proxies) for the test;
// call it first.
func mpmStart(t *testing.T) {
	t.Helper()
	leakCheck(t)
	mptest.CheckLeaks(t)
}

// wantMPDisconnected checks that err is ErrDisconnected's, as mp's
// callers test it.
func wantMPDisconnected(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("%s: %v, want an error matching mp.ErrDisconnected", what, err)
	}
}

// mpmEchoAsync calls e.Echo(ctx, s) in a goroutine and returns the
// channel that gets its error; the caller waits for it.
func mpmEchoAsync(ctx context.Context, e mptestschema.Echo, s string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := e.Echo(ctx, s)
		ch <- err
	}()
	return ch
}

func mustEcho(t *testing.T, e mptestschema.Echo, s string) {
	t.Helper()
	if got, err := e.Echo(testContext(t), s); err != nil || got != s {
		t.Fatalf("echo = %q, %v, want %q", got, err, s)
	}
}

// Calls after the close, of every kind: on a capability held from before,
// on the bootstrap proxy, pipelined, with a capability of the caller's as
// a parameter (which the caller's side then releases), and to a stream
// method.
func TestMPMatrixCallAfterClose(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			s := newMpmSession(t, m)
			ctx := testContext(t)
			held, err := s.maker.MakeEcho(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sink, err := s.maker.Sink(ctx)
			if err != nil {
				t.Fatal(err)
			}
			side.close(s.mxSession)
			if side.name == "server closes" {
				// Once the client has seen the end too: a call made
				// after, not during.
				waitDone(t, "client Done", s.client.Done())
			}

			_, err = held.Echo(ctx, "after")
			wantMPDisconnected(t, "echo on a held Echo", err)
			e, err := s.maker.MakeEcho(ctx)
			wantMPDisconnected(t, "makeEcho", err)
			if e != nil {
				t.Errorf("makeEcho after the close returned %T as well as its error", e)
			}
			pipelined := s.maker.MakeEchoPipelined(ctx)
			_, err = pipelined.Echo(ctx, "after")
			wantMPDisconnected(t, "echo on a pipelined Echo", err)
			_, err = s.maker.Count(ctx, []mptestschema.Item{{Value: 1}})
			wantMPDisconnected(t, "count", err)
			local := &mpmLocal{}
			_, err = s.maker.Identity(ctx, local)
			wantMPDisconnected(t, "identity with a capability of ours", err)
			err = sink.Push(ctx, 2)
			wantMPDisconnected(t, "push", err)
			wantMPDisconnected(t, "Flush", mp.Flush(ctx, sink))

			mp.Release(pipelined)
			mp.Release(sink)
			mp.Release(held)
			s.end(t)
			eventually(t, "the parameter not sent to be released", func() bool { return local.released.get() == 1 })
			eventually(t, "the server to release its Echo", func() bool { return m.released.get() == 1 })
		})
	}
}

// The server's method closes a connection, either end, and returns at
// once: the caller gets a disconnection error, never the results.
func TestMPMatrixDisconnectDuringCall(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			var sess atomic.Pointer[mxSession]
			m := newMpmMaker()
			m.hook = func(context.Context) { side.close(sess.Load()) }
			close(m.release) // return right after the hook
			s := newMpmSession(t, m)
			sess.Store(s.mxSession)
			e, err := s.maker.MakeEcho(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Echo(testContext(t), "wait")
			wantMPDisconnected(t, "the call during which the connection closed", err)
			if got != "" {
				t.Errorf("the call returned %q as well as its error", got)
			}
			waitErr(t, "the method's end", m.ended)
			mp.Release(e)
			s.end(t)
			eventually(t, "the server to release its Echo", func() bool { return m.released.get() == 1 })
		})
	}
}

// The server's method closes a connection and then blocks, ignoring its
// ctx, until the caller has seen the disconnection: the caller does not
// wait for the method, and the connection ends once the method returns.
// A second method on the same object (which takes calls concurrently)
// that watches its ctx sees it canceled.
func TestMPMatrixDisconnectWhileHandlerBlocks(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			var sess atomic.Pointer[mxSession]
			unblock := make(chan struct{})
			var calls atomic.Int32
			m := newMpmMaker()
			m.concurrent = true
			m.hook = func(context.Context) {
				if calls.Add(1) == 1 {
					return // the first call watches its ctx
				}
				side.close(sess.Load())
				<-unblock
			}
			s := newMpmSession(t, m)
			sess.Store(s.mxSession)
			ctx := testContext(t)
			e, err := s.maker.MakeEcho(ctx)
			if err != nil {
				t.Fatal(err)
			}

			watcher := mpmEchoAsync(ctx, e, "wait")
			waitDone(t, "the watching call to start", m.entered)
			_, err = e.Echo(ctx, "wait")
			wantMPDisconnected(t, "the call whose method blocks", err)
			wantMPDisconnected(t, "the call whose method watches its ctx", waitErr(t, "the watching call", watcher))
			if err := waitErr(t, "the watching method's end", m.ended); !errors.Is(err, context.Canceled) {
				t.Errorf("the watching method saw %v, want context.Canceled", err)
			}
			select {
			case <-s.server.Done():
				t.Fatal("server connection ended while its method still ran")
			default:
			}
			close(unblock)
			close(m.release)
			waitErr(t, "the blocking method's end", m.ended)
			mp.Release(e)
			s.end(t)
			eventually(t, "the server to release its Echo", func() bool { return m.released.get() == 1 })
		})
	}
}

// The connection dies while the server's method is calling back into the
// client, whose method waits: the client's call fails with a
// disconnection error, the client's method sees its ctx canceled, the
// server's call back fails with a disconnection error or its ctx's, and
// the client's callback is released.
func TestMPMatrixDisconnectDuringCallback(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			s := newMpmSession(t, m)
			ctx := testContext(t)
			cb, err := s.maker.Callback(ctx)
			if err != nil {
				t.Fatal(err)
			}
			local := &mpmBlockingCallback{entered: make(chan struct{}, 1), ended: make(chan error, 1)}
			called := make(chan error, 1)
			go func() {
				_, err := cb.Call(ctx, 2, local)
				called <- err
			}()
			waitDone(t, "the call back to start", local.entered)
			side.close(s.mxSession)
			wantMPDisconnected(t, "the call whose method called back", waitErr(t, "the call", called))
			if err := waitErr(t, "the called back method's end", local.ended); !errors.Is(err, context.Canceled) {
				t.Errorf("the called back method saw %v, want context.Canceled", err)
			}
			if err := waitErr(t, "the call back", m.backErr); !errors.Is(err, mp.ErrDisconnected) && !errors.Is(err, context.Canceled) {
				t.Errorf("the server's call back: %v, want ErrDisconnected or context.Canceled", err)
			}
			mp.Release(cb)
			s.end(t)
			eventually(t, "the client's callback to be released", func() bool { return local.released.get() == 1 })
		})
	}
}

// On an object that takes one call at a time (mp's ordering rule), a call
// waits for its turn behind one that watches its ctx when the connection
// ends: both callers get a disconnection error at once, both methods run
// with their ctx canceled, and the connection ends after them.
func TestMPMatrixDisconnectWithCallQueued(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			s := newMpmSession(t, m)
			ctx := testContext(t)
			e, err := s.maker.MakeEcho(ctx)
			if err != nil {
				t.Fatal(err)
			}
			first := mpmEchoAsync(ctx, e, "wait")
			waitDone(t, "the first call to start", m.entered)
			sent := s.callsSent()
			queued := mpmEchoAsync(ctx, e, "wait")
			eventually(t, "the second call to be sent", func() bool { return s.callsSent() > sent })
			// The server reads calls in order and queues each on its
			// object as it reads it: once a later call has returned,
			// the second one waits in the queue.
			if _, err := s.maker.Count(ctx, nil); err != nil {
				t.Fatalf("count: %v", err)
			}
			side.close(s.mxSession)
			wantMPDisconnected(t, "the running call", waitErr(t, "the running call", first))
			wantMPDisconnected(t, "the queued call", waitErr(t, "the queued call", queued))
			for _, what := range []string{"the running method's end", "the queued method's end"} {
				if err := waitErr(t, what, m.ended); !errors.Is(err, context.Canceled) {
					t.Errorf("%s: %v, want context.Canceled", what, err)
				}
			}
			mp.Release(e)
			s.end(t)
			eventually(t, "the server to release its Echo", func() bool { return m.released.get() == 1 })
		})
	}
}

// Capabilities the client holds (an Echo it got, a pipelined one, a
// second proxy of the bootstrap capability from mp.Retain) are released
// after the peer went away, in any order: nothing panics, calls on them
// fail with a disconnection error, and the server released the Echo
// objects it had handed out. The same holds the other way: the server
// kept a capability of the client's (mp.Retain of a parameter), which it
// releases after the end, and the client's value learns that no one
// refers to it any more.
func TestMPMatrixReleaseAfterPeerGone(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			s := newMpmSession(t, m)
			ctx := testContext(t)
			held, err := s.maker.MakeEcho(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustEcho(t, held, "held")
			pipelined := s.maker.MakeEchoPipelined(ctx)
			mustEcho(t, pipelined, "pipelined")
			retained := mp.Retain(s.maker)
			local := &mpmLocal{}
			if back, err := s.maker.Identity(ctx, local); err != nil || back != mptestschema.Echo(local) {
				t.Fatalf("identity = %T %v, %v, want our own value back", back, back, err)
			}

			side.close(s.mxSession)
			waitDone(t, "client Done", s.client.Done())
			_, err = held.Echo(ctx, "gone")
			wantMPDisconnected(t, "echo on a held Echo after the end", err)
			_, err = pipelined.Echo(ctx, "gone")
			wantMPDisconnected(t, "echo on a pipelined Echo after the end", err)
			_, err = retained.Count(ctx, nil)
			wantMPDisconnected(t, "count on a retained Maker after the end", err)
			mp.Release(pipelined)
			mp.Release(held)
			m.releaseKept()
			mp.Release(retained)
			s.end(t)
			eventually(t, "the server to release both Echo objects", func() bool { return m.released.get() == 2 })
			eventually(t, "the client's value to be released", func() bool { return local.released.get() == 1 })
		})
	}
}

// makeEcho's method returns its capability only after the connection has
// broken (it waits for its ctx to end): the caller gets a disconnection
// error, whether it waited for the results or pipelined a call on them,
// and the capability that could not be delivered is released.
func TestMPMatrixCapabilityReturnedAfterBreak(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			m.concurrent = true
			m.makeHook = func(ctx context.Context) {
				m.entered <- struct{}{}
				<-ctx.Done()
			}
			s := newMpmSession(t, m)
			ctx := testContext(t)
			type made struct {
				e   mptestschema.Echo
				err error
			}
			waited := make(chan made, 1)
			go func() {
				e, err := s.maker.MakeEcho(ctx)
				waited <- made{e, err}
			}()
			waitDone(t, "makeEcho to start", m.entered)
			pipelined := s.maker.MakeEchoPipelined(ctx)
			onPipelined := mpmEchoAsync(ctx, pipelined, "never")
			waitDone(t, "the pipelined makeEcho to start", m.entered)

			side.close(s.mxSession)
			select {
			case r := <-waited:
				wantMPDisconnected(t, "makeEcho across the break", r.err)
				if r.e != nil {
					t.Errorf("makeEcho across the break returned %T as well as its error", r.e)
				}
			case <-testContext(t).Done():
				t.Fatal("makeEcho did not return")
			}
			wantMPDisconnected(t, "echo pipelined on makeEcho across the break", waitErr(t, "the pipelined echo", onPipelined))
			_, err := pipelined.Echo(ctx, "never")
			wantMPDisconnected(t, "echo on the capability returned after the break", err)
			mp.Release(pipelined)
			s.end(t)
			eventually(t, "makeEcho to make its Echo objects", func() bool { return m.made.get() == 2 })
			eventually(t, "the undelivered Echo objects to be released", func() bool { return m.released.get() == 2 })
		})
	}
}

// Calls to a `-> stream` method are in flight when the connection dies:
// the first one's method waits for its ctx, the others wait for their
// turn, and one more waits for room in the stream window. That one fails
// with a disconnection error, mp.Flush returns one, and later calls on
// the proxy, stream or not, fail with one (stream calls with Flush's).
func TestMPMatrixStreamInFlight(t *testing.T) {
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			mpmStart(t)
			m := newMpmMaker()
			s := newMpmSession(t, m)
			ctx := testContext(t)
			sink, err := s.maker.Sink(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var sent atomic.Int32
			pushing := make(chan error, 1)
			go func() {
				for n := uint32(1); ; n++ {
					if err := sink.Push(ctx, n); err != nil {
						pushing <- err
						return
					}
					sent.Add(1)
				}
			}()
			waitDone(t, "the first push to start", m.entered)
			// The generated path's window (its calls start no goroutine);
			// the connection's MaxCalls (1024) leaves it whole.
			window := int32(rpcconn.DirectStreamWindow)
			eventually(t, "the stream window to fill", func() bool { return sent.Load() >= window })
			time.Sleep(settle)
			if n := sent.Load(); n != window {
				t.Fatalf("%d pushes sent with none returned, want the stream window (%d)", n, window)
			}
			side.close(s.mxSession)
			wantMPDisconnected(t, "the push waiting for room", waitErr(t, "the push waiting for room", pushing))
			flushed := mp.Flush(ctx, sink)
			wantMPDisconnected(t, "Flush", flushed)
			err = sink.Push(ctx, 1000)
			wantMPDisconnected(t, "push after the end", err)
			if err != flushed {
				t.Errorf("push after the end: %v, want Flush's error %v", err, flushed)
			}
			_, err = sink.Total(ctx)
			wantMPDisconnected(t, "total after the end", err)
			mp.Release(sink)
			s.end(t)
		})
	}
}
