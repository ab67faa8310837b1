package interop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/interop/internal/mpischema"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// The scenarios of scenarios_test.go with the Go side as client on the
// generated path: mpgen's proxies (package mpischema) on package mp,
// against the C++ server, on the connection that TestGoClient uses. The
// C++ side is the same in both; so are the checks, in mp's terms: plain
// values and errors, no futures.

// within returns what ch delivers, or fails the test after patience.
func within[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatalf("%s: nothing within %v", what, patience)
		var zero T
		return zero
	}
}

// result is a call's outcome, sent back from the goroutine that made it.
type result[T any] struct {
	v   T
	err error
}

// goCall makes a call in a goroutine of its own; the channel delivers
// its outcome.
func goCall[T any](call func() (T, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := call()
		ch <- result[T]{v, err}
	}()
	return ch
}

func TestMPClientEcho(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		e, err := s.mp.MakeEcho(ctx)
		if err != nil {
			t.Fatalf("makeEcho: %v", err)
		}
		defer mp.Release(e)
		for _, n := range []int{8, 1 << 20} {
			want := pattern(n)
			got, err := e.Echo(ctx, want)
			if err != nil {
				t.Fatalf("echo %d bytes: %v", n, err)
			}
			if got != want {
				t.Errorf("echo %d bytes: got %d bytes back, not the same", n, len(got))
			}
		}
		mp.Release(e)
		s.expectCleanExit(t)
	})
}

// TestMPClientPipeline holds the C++ peer's answers on the wire: the echo
// called on makeEcho's pipelined result must go out at once, to the
// answer of makeEcho, and return once the answers flow.
func TestMPClientPipeline(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		var w *wire
		s := dialCppWith(t, tr, func(nc net.Conn) net.Conn { w = newWire(nc); return w })
		ctx := testContext(t)
		w.holdReads()
		e := s.mp.(*mpischema.PeerClient).MakeEchoPipelined(ctx)
		defer mp.Release(e)
		done := goCall(func() (string, error) { return e.Echo(ctx, "pipelined") })
		w.awaitSent(t, "the pipelined echo", 1, isCall(schema.EchoInterface.ID(), 0))
		makes := w.sentMatching(isCall(mpischema.PeerInterface.ID(), 0))
		echoes := w.sentMatching(isCall(schema.EchoInterface.ID(), 0))
		if len(makes) != 1 || !echoes[0].pipelined || echoes[0].onAnswer != makes[0].question {
			t.Errorf("sent %v, then %v: want the echo on makeEcho's answer", makes, echoes)
		}
		w.openReads()
		r := within(t, "pipelined echo", done)
		if r.err != nil || r.v != "pipelined" {
			t.Fatalf("pipelined echo = %q, %v", r.v, r.err)
		}
		mp.Release(e)
		s.expectCleanExit(t)
	})
}

func TestMPClientCallback(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		remote, err := s.mp.MakeCallback(ctx)
		if err != nil {
			t.Fatalf("makeCallback: %v", err)
		}
		defer mp.Release(remote)
		trace, err := remote.Call(ctx, 5, &mpCallback{})
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		// The C++ side is called at depth 5, then the sides alternate.
		if want := "c++ go c++ go c++ go"; trace != want {
			t.Errorf("trace = %q, want %q", trace, want)
		}
		mp.Release(remote)
		s.expectCleanExit(t)
	})
}

var mpErrorTypes = []struct {
	wire mpischema.ErrorType
	exc  mp.ExceptionType
	cpp  string
}{
	{mpischema.ErrorType_Failed, mp.Failed, "FAILED"},
	{mpischema.ErrorType_Overloaded, mp.Overloaded, "OVERLOADED"},
	{mpischema.ErrorType_Disconnected, mp.Disconnected, "DISCONNECTED"},
	{mpischema.ErrorType_Unimplemented, mp.Unimplemented, "UNIMPLEMENTED"},
}

// checkRemoteError checks that err is an exception from the peer of type
// want whose text contains each of reasons.
func checkRemoteError(t *testing.T, what string, err error, want mp.ExceptionType, reasons ...string) *mp.RemoteError {
	t.Helper()
	var re *mp.RemoteError
	if !errors.As(err, &re) {
		t.Errorf("%s: %v (%T), want a *mp.RemoteError", what, err, err)
		return nil
	}
	if re.Type != want {
		t.Errorf("%s: exception type %v, want %v", what, re.Type, want)
	}
	for _, r := range reasons {
		if !strings.Contains(err.Error(), r) {
			t.Errorf("%s: error %q does not contain %q", what, err, r)
		}
	}
	if got := errors.Is(err, mp.ErrUnimplemented); got != (want == mp.Unimplemented) {
		t.Errorf("%s: errors.Is(err, mp.ErrUnimplemented) = %v", what, got)
	}
	// The connection is fine: a disconnected exception is the peer's.
	if errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("%s: errors.Is(err, mp.ErrDisconnected) holds for an exception the peer returned", what)
	}
	return re
}

// TestMPClientError: exceptions of every type that the C++ server
// throws keep their type and reason; so do declared errors that a Go
// callback returns to the C++ peer, which relays them back: C++ 0.9.2
// knows no Exception.details, so their code does not survive the trip,
// harmlessly.
func TestMPClientError(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		for _, tc := range mpErrorTypes {
			reason := "boom-" + tc.cpp
			err := s.mp.Fail(ctx, tc.wire, reason)
			if err == nil {
				t.Errorf("fail(%s) succeeded", tc.cpp)
				continue
			}
			t.Logf("fail(%s): %v", tc.cpp, err)
			if re := checkRemoteError(t, "fail("+tc.cpp+")", err, tc.exc, reason); re != nil && re.Code != "" {
				t.Errorf("fail(%s): code %q from a peer that sends none", tc.cpp, re.Code)
			}
		}
		remote, err := s.mp.MakeCallback(ctx)
		if err != nil {
			t.Fatalf("makeCallback: %v", err)
		}
		defer mp.Release(remote)
		for _, tc := range mpErrorTypes {
			declared := declaredErrors[tc.wire]
			// At depth 1, the C++ callback calls ours, which fails.
			_, err := remote.Call(ctx, 1, &mpFailingCallback{err: fmt.Errorf("relayed-%s: %w", tc.cpp, declared)})
			if err == nil {
				t.Errorf("relayed %s succeeded", tc.cpp)
				continue
			}
			t.Logf("relayed %s: %v (errors.Is declared: %v)", tc.cpp, err, errors.Is(err, declared))
			checkRemoteError(t, "relayed "+tc.cpp, err, tc.exc, "relayed-"+tc.cpp, declared.Error())
		}
		mp.Release(remote)
		// The connection is still usable after exceptions.
		if _, err := s.mp.LiveCount(ctx); err != nil {
			t.Errorf("liveCount after exceptions: %v", err)
		}
		s.expectCleanExit(t)
	})
}

func TestMPClientRelease(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		before, err := s.mp.LiveCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.mp.MakeCounted(ctx)
		if err != nil {
			t.Fatalf("makeCounted: %v", err)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
		if n, err := s.mp.LiveCount(ctx); err != nil || n != before+1 {
			t.Fatalf("liveCount while held = %d, %v; want %d", n, err, before+1)
		}
		mp.Release(c)
		var n uint32
		if !eventually(func() bool {
			n, err = s.mp.LiveCount(ctx)
			return err == nil && n == before
		}) {
			t.Fatalf("liveCount after release = %d, %v; want %d: the C++ object was not destroyed", n, err, before)
		}
		s.expectCleanExit(t)
	})
}

// mpClientEmbargo is goClientEmbargo on the generated path, whose calls
// block until they return: calls on the pipelined result of
// echoCap(ours) (or echoCapLater) are made from goroutines, each once the
// wire shows the one before sent, while the wire holds the C++ peer's
// answers. Once the connection has handled the Return (or the Resolve)
// that reveals the result to be our own CallOrder, a call made then is
// local but must wait for the calls that the C++ peer is reflecting back,
// still on the wire: the embargo. Then the wire opens; every call must
// have reached our CallOrder in the order it was made. (With later, the
// C++ reference forwards the calls queued on its promise before it sends
// the Resolve: the embargo holds nothing then, and the case checks that
// the calls the connection delivered keep their place ahead of ours.)
func mpClientEmbargo(t *testing.T, tr string, later bool) {
	var w *wire
	s := dialCppWith(t, tr, func(nc net.Conn) net.Conn { w = newWire(nc); return w })
	ctx := testContext(t)
	peer := s.mp.(*mpischema.PeerClient)
	// A first call settles the bootstrap capability.
	if _, err := peer.LiveCount(ctx); err != nil {
		t.Fatal(err)
	}
	order := &mpCallOrder{}
	w.holdReads()
	var pipeline mpischema.CallOrder
	method := uint16(5) // echoCap
	if later {
		pipeline, method = peer.EchoCapLaterPipelined(ctx, order, 20), 6
	} else {
		pipeline = peer.EchoCapPipelined(ctx, order)
	}
	defer mp.Release(pipeline)
	w.awaitSent(t, "the echoCap call", 1, isCall(mpischema.PeerInterface.ID(), method))
	echoQ := w.sentMatching(isCall(mpischema.PeerInterface.ID(), method))[0].question

	var calls []<-chan result[uint32]
	sent := 0
	call := func(remote bool) {
		i := uint32(len(calls))
		calls = append(calls, goCall(func() (uint32, error) { return pipeline.GetCallSequence(ctx, i) }))
		if remote {
			sent++
			w.awaitSent(t, fmt.Sprintf("call %d on the pipeline", i), sent, isCall(mpischema.CallOrderInterface.ID(), 0))
		}
	}
	call(true)
	call(true)
	call(true)
	w.passUntil(t, "echoCap's Return", isReturn(echoQ))
	if later {
		// The result is the C++ peer's promise; calls to it go there too,
		// until it resolves to our CallOrder (after 20 ms).
		call(true)
		call(true)
		w.passUntil(t, "the promise's Resolve", isKind(rpccp.Message_Which_resolve))
	}
	// The pipeline is now our CallOrder, behind an embargo that the
	// Disembargo sent lifts once it comes back behind the reflected calls.
	w.awaitSent(t, "a Disembargo", 1, isKind(rpccp.Message_Which_disembargo))
	call(false)
	// Give the call time to reach the embargo: if it overtakes the calls
	// still on the wire, they arrive after it. (Were it slower, it would
	// be made after they arrived, and prove nothing: no false failure.)
	time.Sleep(20 * time.Millisecond)
	w.openReads()
	for i, ch := range calls {
		r := within(t, fmt.Sprintf("call %d", i), ch)
		if r.err != nil {
			t.Fatalf("call %d: %v", i, r.err)
		}
		if r.v != uint32(i) {
			t.Errorf("call %d arrived as number %d", i, r.v)
		}
	}
	// And once the embargo is over, calls go on in order.
	if n, err := pipeline.GetCallSequence(ctx, uint32(len(calls))); err != nil || n != uint32(len(calls)) {
		t.Errorf("last call = %d, %v; want %d", n, err, len(calls))
	}
	mp.Release(pipeline)
	s.expectCleanExit(t)
}

func TestMPClientEmbargo(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) { mpClientEmbargo(t, tr, false) })
}

func TestMPClientEmbargoLater(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) { mpClientEmbargo(t, tr, true) })
}

func TestMPClientStream(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)

		// Go streams to the C++ listener...
		l, err := s.mp.MakeListener(ctx)
		if err != nil {
			t.Fatalf("makeListener: %v", err)
		}
		defer mp.Release(l)
		if err := mpStreamEvents(ctx, l, streamCount); err != nil {
			t.Fatalf("stream to C++: %v", err)
		}
		var got mpischema.Peer_Received_Results
		eventually(func() bool {
			got, err = s.mp.Received(ctx)
			return err != nil || got.Count >= streamCount
		})
		if err != nil || got.Count != streamCount || got.OutOfOrder != 0 {
			t.Errorf("C++ listener received %d events, %d out of order, err %v; want %d in order", got.Count, got.OutOfOrder, err, streamCount)
		}

		// ...and C++ streams to a Go listener.
		local := &mpListener{}
		if err := s.mp.StreamTo(ctx, local, streamCount); err != nil {
			t.Fatalf("streamTo: %v", err)
		}
		eventually(func() bool { n, _ := local.counts(); return n >= streamCount })
		if n, bad := local.counts(); n != streamCount || bad != 0 {
			t.Errorf("Go listener received %d events, %d out of order; want %d in order", n, bad, streamCount)
		}
		mp.Release(l)
		s.expectCleanExit(t)
	})
}

// TestMPClientDisconnect kills the C++ server while a call is running in
// it: the call must fail at once with an error matching
// mp.ErrDisconnected, and so must calls made afterwards.
func TestMPClientDisconnect(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		e, err := s.mp.MakeEcho(ctx)
		if err != nil {
			t.Fatalf("makeEcho: %v", err)
		}
		defer mp.Release(e)
		done := goCall(func() (string, error) { return e.EchoAfter(ctx, "never", 60000) })
		s.proc.waitLine(t, "echoAfter started")
		s.proc.kill()
		r := within(t, "echoAfter after the server was killed", done)
		if r.err == nil {
			t.Fatal("echoAfter succeeded after the server was killed")
		}
		t.Logf("echoAfter: %v", r.err)
		if !errors.Is(r.err, mp.ErrDisconnected) {
			t.Errorf("errors.Is(%v, mp.ErrDisconnected) = false", r.err)
		}
		select {
		case <-s.conn.Done():
		case <-time.After(patience):
			t.Fatalf("connection did not end within %v of the peer's death", patience)
		}
		if err := s.conn.Err(); !protocol.IsDisconnected(err) {
			t.Errorf("Conn.Err() = %v, want a disconnection", err)
		}
		if _, err := s.mp.LiveCount(ctx); !errors.Is(err, mp.ErrDisconnected) {
			t.Errorf("call after the peer died: %v, want mp.ErrDisconnected", err)
		}
		if err := s.proc.wait(t); err == nil || !strings.Contains(err.Error(), syscall.SIGKILL.String()) {
			t.Errorf("C++ server exit: %v, want killed", err)
		}
	})
}

// TestMPClientCancel cancels a call running in the C++ server through
// its ctx: the call fails at once with ctx's error, the C++ side drops
// its work, and the connection goes on.
func TestMPClientCancel(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		e, err := s.mp.MakeEcho(ctx)
		if err != nil {
			t.Fatalf("makeEcho: %v", err)
		}
		defer mp.Release(e)
		callCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := goCall(func() (string, error) { return e.EchoAfter(callCtx, "never", 60000) })
		s.proc.waitLine(t, "echoAfter started")
		cancel()
		r := within(t, "canceled echoAfter", done)
		t.Logf("canceled echoAfter: %q, %v", r.v, r.err)
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("canceled echoAfter = %q, %v; want context.Canceled", r.v, r.err)
		}
		s.proc.waitLine(t, "echoAfter canceled")
		if got, err := e.Echo(ctx, "after"); err != nil || got != "after" {
			t.Errorf("echo after cancel = %q, %v", got, err)
		}
		mp.Release(e)
		s.expectCleanExit(t)
	})
}
