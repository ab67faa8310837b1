package interop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3/exc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/interop/internal/ischema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Each scenario runs on each transport with Go as client of the C++ peer,
// on go-capnp's generated API (TestGoClient, here) and on mpgen's
// (TestMPClient, in mpscenarios_test.go), and with the C++ peer as client
// of a Go server on each of the two paths (TestCppClient, subtests
// capnpc-go and mp).

func forTransports(t *testing.T, fn func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { fn(t, tr) })
	}
}

// forServers runs fn on each transport with a new goServer of each path.
func forServers(t *testing.T, fn func(t *testing.T, transport string, p goServer)) {
	for _, s := range goServers {
		t.Run(s.path, func(t *testing.T) {
			forTransports(t, func(t *testing.T, tr string) { fn(t, tr, s.new()) })
		})
	}
}

func echo(ctx context.Context, e schema.Echo, s string) (string, error) {
	f, release := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
	defer release()
	r, err := f.Struct()
	if err != nil {
		return "", err
	}
	return r.Result()
}

func pattern(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

func liveCount(ctx context.Context, p ischema.Peer) (uint32, error) {
	f, release := p.LiveCount(ctx, nil)
	defer release()
	r, err := f.Struct()
	if err != nil {
		return 0, err
	}
	return r.Count(), nil
}

// eventually polls cond every 10 ms until it holds or patience runs out.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func TestGoClientEcho(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		f, release := s.peer.MakeEcho(ctx, nil)
		defer release()
		for _, n := range []int{8, 1 << 20} {
			want := pattern(n)
			got, err := echo(ctx, f.Echo(), want)
			if err != nil {
				t.Fatalf("echo %d bytes: %v", n, err)
			}
			if got != want {
				t.Errorf("echo %d bytes: got %d bytes back, not the same", n, len(got))
			}
		}
		release()
		s.expectCleanExit(t)
	})
}

func TestCppClientEcho(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "echo", p)
		expectLines(t, out, "ok echo 8 bytes", "ok echo 1048576 bytes")
	})
}

func TestGoClientPipeline(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		f, release := s.peer.MakeEcho(ctx, nil)
		defer release()
		// Not waiting for makeEcho: the call goes to its promised result.
		got, err := echo(ctx, f.Echo(), "pipelined")
		if err != nil || got != "pipelined" {
			t.Fatalf("pipelined echo = %q, %v", got, err)
		}
		release()
		s.expectCleanExit(t)
	})
}

func TestCppClientPipeline(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "pipeline", p)
		expectLines(t, out, "ok pipelined echo")
	})
}

func TestGoClientCallback(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		rf, releaseRemote := s.peer.MakeCallback(ctx, nil)
		defer releaseRemote()
		local := newGoCallback()
		defer local.Release()
		f, release := rf.Callback().Call(ctx, func(p ischema.Callback_call_Params) error {
			p.SetDepth(5)
			return p.SetBack(local.AddRef())
		})
		defer release()
		r, err := f.Struct()
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		trace, _ := r.Trace()
		// The C++ side is called at depth 5, then the sides alternate.
		if want := "c++ go c++ go c++ go"; trace != want {
			t.Errorf("trace = %q, want %q", trace, want)
		}
		release()
		releaseRemote()
		s.expectCleanExit(t)
	})
}

func TestCppClientCallback(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "callback", p)
		expectLines(t, out, "ok callback trace: go c++ go c++ go c++")
	})
}

var errorTypes = []struct {
	wire ischema.ErrorType
	exc  exc.Type
	cpp  string
}{
	{ischema.ErrorType_failed, exc.Failed, "FAILED"},
	{ischema.ErrorType_overloaded, exc.Overloaded, "OVERLOADED"},
	{ischema.ErrorType_disconnected, exc.Disconnected, "DISCONNECTED"},
	{ischema.ErrorType_unimplemented, exc.Unimplemented, "UNIMPLEMENTED"},
}

func TestGoClientError(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		for _, tc := range errorTypes {
			reason := "boom-" + tc.cpp
			f, release := s.peer.Fail(ctx, func(p ischema.Peer_fail_Params) error {
				p.SetType(tc.wire)
				return p.SetReason(reason)
			})
			_, err := f.Struct()
			release()
			if err == nil {
				t.Errorf("fail(%s) succeeded", tc.cpp)
				continue
			}
			t.Logf("fail(%s): %v", tc.cpp, err)
			if got := exc.TypeOf(err); got != tc.exc {
				t.Errorf("fail(%s): exception type %v, want %v", tc.cpp, got, tc.exc)
			}
			if !strings.Contains(err.Error(), reason) {
				t.Errorf("fail(%s): error %q does not contain %q", tc.cpp, err, reason)
			}
		}
		// The connection is still usable after exceptions.
		if _, err := liveCount(ctx, s.peer); err != nil {
			t.Errorf("liveCount after exceptions: %v", err)
		}
		s.expectCleanExit(t)
	})
}

func TestCppClientError(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "error", p)
		var want []string
		for _, tc := range errorTypes {
			want = append(want, "ok error "+tc.cpp)
		}
		expectLines(t, out, want...)
	})
}

func TestGoClientRelease(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		before, err := liveCount(ctx, s.peer)
		if err != nil {
			t.Fatal(err)
		}
		f, release := s.peer.MakeCounted(ctx, nil)
		pf, releasePing := f.Counted().Ping(ctx, nil)
		if _, err := pf.Struct(); err != nil {
			t.Fatalf("ping: %v", err)
		}
		releasePing()
		if n, err := liveCount(ctx, s.peer); err != nil || n != before+1 {
			t.Fatalf("liveCount while held = %d, %v; want %d", n, err, before+1)
		}
		release()
		var n uint32
		if !eventually(func() bool {
			n, err = liveCount(ctx, s.peer)
			return err == nil && n == before
		}) {
			t.Fatalf("liveCount after release = %d, %v; want %d: the C++ object was not destroyed", n, err, before)
		}
		s.expectCleanExit(t)
	})
}

func TestCppClientRelease(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "release", p)
		expectLines(t, out, "ok live while held: 1", "ok live after release: 0")
		if n := p.liveCounted(); n != 0 {
			t.Errorf("Go Counted objects live after the connection ended: %d", n)
		}
	})
}

func sequence(ctx context.Context, c ischema.CallOrder, expected uint32) func() (uint32, error) {
	f, release := c.GetCallSequence(ctx, func(p ischema.CallOrder_getCallSequence_Params) error {
		p.SetExpected(expected)
		return nil
	})
	return func() (uint32, error) {
		defer release()
		r, err := f.Struct()
		if err != nil {
			return 0, err
		}
		return r.N(), nil
	}
}

// goClientEmbargo follows the C++ reference's embargo test (rpc-test.c++):
// calls on the pipelined result of echoCap(ours), before and after it
// resolves to our own capability, must reach our object in the order they
// were made.
func goClientEmbargo(t *testing.T, tr string, later bool) {
	s := dialCpp(t, tr)
	ctx := testContext(t)
	order := &goCallOrder{}
	local := ischema.CallOrder(protocol.NewServer(ischema.CallOrder_Methods(nil, order), order, nil))
	defer local.Release()

	early, releaseEarly := s.peer.LiveCount(ctx, nil)
	defer releaseEarly()
	var pipeline ischema.CallOrder
	var wait func() error
	if later {
		f, release := s.peer.EchoCapLater(ctx, func(p ischema.Peer_echoCapLater_Params) error {
			p.SetDelayMs(20)
			return p.SetCap(local.AddRef())
		})
		defer release()
		pipeline = f.Cap()
		wait = func() error { _, err := f.Struct(); return err }
	} else {
		f, release := s.peer.EchoCap(ctx, func(p ischema.Peer_echoCap_Params) error {
			return p.SetCap(local.AddRef())
		})
		defer release()
		pipeline = f.Cap()
		wait = func() error { _, err := f.Struct(); return err }
	}
	var calls []func() (uint32, error)
	calls = append(calls, sequence(ctx, pipeline, 0), sequence(ctx, pipeline, 1))
	if _, err := early.Struct(); err != nil {
		t.Fatalf("early call: %v", err)
	}
	calls = append(calls, sequence(ctx, pipeline, 2))
	if err := wait(); err != nil {
		t.Fatalf("echoCap: %v", err)
	}
	calls = append(calls, sequence(ctx, pipeline, 3), sequence(ctx, pipeline, 4))
	if later {
		time.Sleep(50 * time.Millisecond) // the promise resolves meanwhile
		calls = append(calls, sequence(ctx, pipeline, 5))
		if err := pipeline.Resolve(ctx); err != nil {
			t.Fatalf("resolve: %v", err)
		}
	}
	calls = append(calls, sequence(ctx, pipeline, uint32(len(calls))))
	var got []string
	inOrder := true
	for i, c := range calls {
		n, err := c()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got = append(got, fmt.Sprint(n))
		if n != uint32(i) {
			inOrder = false
		}
	}
	if !inOrder {
		t.Errorf("calls arrived in the order %s, want 0..%d", strings.Join(got, " "), len(calls)-1)
	}
	s.expectCleanExit(t)
}

// bugTailCall is why the Go client's embargo cases are skipped on
// go-capnp's rpc package. The C++ peer, holding a call on a promised
// answer that resolved to a capability the caller hosts, reflects the
// call back as a Call with sendResultsTo.yourself (Level 1 in rpc.capnp)
// and answers the original question with Return.takeFromOtherQuestion.
// go-capnp supports neither: it logs "incoming call: results destination
// is not caller" and sends Unimplemented, the calls fail with "rpc: parse
// return: unhandled type takeFromOtherQuestion", the C++ peer aborts with
// "Peer did not implement required RPC message type.; (uint)message.which()
// = 2", and go-capnp then often panics in the test process while shutting
// the connection down: nil dereference in capnp.(*AnswerQueue).Fulfill
// (answerqueue.go:104) from rpc.(*embargo).lift (rpc/export.go:332), from
// rpc.(*Conn).shutdown (rpc/rpc.go:421). Measured with
// MP_INTEROP_KNOWN_BUGS=1, 10 runs per transport: embargo panicked 16 of
// 20 times, failed as above 3 times, passed once; embargo-later failed as
// above 20 of 20 times.
const bugTailCall = "no support for Call.sendResultsTo.yourself / Return.takeFromOtherQuestion, then a panic in embargo.lift on shutdown"

func TestGoClientEmbargo(t *testing.T) {
	skipKnownBug(t, bugTailCall)
	forTransports(t, func(t *testing.T, tr string) { goClientEmbargo(t, tr, false) })
}

func TestGoClientEmbargoLater(t *testing.T) {
	skipKnownBug(t, bugTailCall)
	forTransports(t, func(t *testing.T, tr string) { goClientEmbargo(t, tr, true) })
}

func TestCppClientEmbargo(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "embargo", p)
		expectLines(t, out, "ok embargo order: 0 1 2 3 4 5")
	})
}

// bugLocalPromise is why the C++ client's embargo-later case is skipped
// on go-capnp's rpc package: the Go peer's echoCapLater returns a
// capnp.NewLocalPromise and fulfills it 20 ms later with the capability
// the C++ client sent, while the client's pipelined calls are queued on
// it. In about 3 of 160 runs, Fulfill panics in the test process: nil
// dereference in capnp.(*AnswerQueue).Fulfill (answerqueue.go:104), from
// localResolver.Fulfill (localpromise.go:36) in peer_test.go's goroutine:
// a queued call's Recv on the imported capability returned a nil
// PipelineCaller. DESIGN's "resolve capabilities before putting them in
// results" is this trap; the other runs pass, in order.
const bugLocalPromise = "panic in AnswerQueue.Fulfill when a local promise in results resolves with calls queued on it (about 2%)"

func TestCppClientEmbargoLater(t *testing.T) {
	skipKnownBug(t, bugLocalPromise)
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "embargo-later", p)
		expectLines(t, out, "ok embargo-later order: 0 1 2 3 4 5 6")
	})
}

const streamCount = 1000

func TestGoClientStream(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)

		// Go streams to the C++ listener...
		lf, releaseListener := s.peer.MakeListener(ctx, nil)
		defer releaseListener()
		if err := streamEvents(ctx, lf.Listener(), streamCount); err != nil {
			t.Fatalf("stream to C++: %v", err)
		}
		var count, bad uint64
		var err error
		eventually(func() bool {
			f, release := s.peer.Received(ctx, nil)
			defer release()
			r, e := f.Struct()
			if err = e; e != nil {
				return true
			}
			count, bad = r.Count(), r.OutOfOrder()
			return count >= streamCount
		})
		if err != nil || count != streamCount || bad != 0 {
			t.Errorf("C++ listener received %d events, %d out of order, err %v; want %d in order", count, bad, err, streamCount)
		}

		// ...and C++ streams to a Go listener.
		l := &goListener{}
		f, release := s.peer.StreamTo(ctx, func(p ischema.Peer_streamTo_Params) error {
			p.SetCount(streamCount)
			return p.SetListener(l.client())
		})
		defer release()
		if _, err := f.Struct(); err != nil {
			t.Fatalf("streamTo: %v", err)
		}
		eventually(func() bool { n, _ := l.counts(); return n >= streamCount })
		if n, bad := l.counts(); n != streamCount || bad != 0 {
			t.Errorf("Go listener received %d events, %d out of order; want %d in order", n, bad, streamCount)
		}
		release()
		releaseListener()
		s.expectCleanExit(t)
	})
}

func TestCppClientStream(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		out := runCppClient(t, tr, "stream", p)
		expectLines(t, out, "ok stream out: received 1000, out of order 0", "ok stream in: received 1000, out of order 0")
		if n, bad := p.heard(); n != streamCount || bad != 0 {
			t.Errorf("Go listener received %d events, %d out of order", n, bad)
		}
	})
}

// TestGoClientDisconnect kills the C++ server while a call is running in
// it: the call must fail at once with an error for which
// protocol.IsDisconnected is true, and the connection must end.
func TestGoClientDisconnect(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		ef, releaseEcho := s.peer.MakeEcho(ctx, nil)
		defer releaseEcho()
		f, release := ef.Echo().EchoAfter(ctx, func(p schema.Echo_echoAfter_Params) error {
			p.SetDelayMs(60000)
			return p.SetEcho("never")
		})
		defer release()
		s.proc.waitLine(t, "echoAfter started")
		s.proc.kill()
		_, err := f.Struct()
		if err == nil {
			t.Fatal("echoAfter succeeded after the server was killed")
		}
		t.Logf("echoAfter: %v", err)
		if !protocol.IsDisconnected(err) {
			t.Errorf("protocol.IsDisconnected(%v) = false", err)
		}
		select {
		case <-s.conn.Done():
		case <-time.After(patience):
			t.Fatalf("connection did not end within %v of the peer's death", patience)
		}
		if err := s.conn.Err(); !protocol.IsDisconnected(err) {
			t.Errorf("Conn.Err() = %v, want a disconnection", err)
		}
		// A call made afterwards fails the same way, at once.
		if _, err := liveCount(ctx, s.peer); !protocol.IsDisconnected(err) {
			t.Errorf("call after the peer died: %v, want a disconnection", err)
		}
		if err := s.proc.wait(t); err == nil || !strings.Contains(err.Error(), syscall.SIGKILL.String()) {
			t.Errorf("C++ server exit: %v, want killed", err)
		}
	})
}

// helperModes are the suffixes of the helper modes (helperEnv) of each
// path, by the path's name.
var helperModes = []struct{ path, suffix string }{{"capnpc-go", ""}, {"mp", "-mp"}}

// TestCppClientDisconnect kills a Go server (this test binary, run as a
// helper) while the C++ client waits for a call in it: the C++ side must
// see a DISCONNECTED exception.
func TestCppClientDisconnect(t *testing.T) {
	for _, m := range helperModes {
		t.Run(m.path, func(t *testing.T) {
			requirePeer(t)
			helperEnd, cppEnd := filePair(t)
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			helper := startChild(t, self, []string{"-test.run=^$"}, helperEnd, helperEnv+"=serve-fd"+m.suffix)
			cpp := startChild(t, peerPath, []string{"client-fd", "3", "disconnect"}, cppEnd)
			helper.waitLine(t, "echoAfter started")
			helper.kill()
			if err := cpp.wait(t); err != nil {
				t.Errorf("C++ client: %v", err)
			}
			expectLines(t, cpp.output(), "exception DISCONNECTED", "ok disconnect")
			for _, l := range cpp.output() {
				if strings.HasPrefix(l, "exception") {
					t.Logf("C++ client: %s", l)
				}
			}
		})
	}
}

// TestGoClientCancel cancels a call running in the C++ server through its
// ctx: the call fails at once with ctx's error, the C++ side drops its
// work, and the connection goes on.
func TestGoClientCancel(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		s := dialCpp(t, tr)
		ctx := testContext(t)
		ef, releaseEcho := s.peer.MakeEcho(ctx, nil)
		defer releaseEcho()
		callCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		f, release := ef.Echo().EchoAfter(callCtx, func(p schema.Echo_echoAfter_Params) error {
			p.SetDelayMs(60000)
			return p.SetEcho("never")
		})
		defer release()
		s.proc.waitLine(t, "echoAfter started")
		cancel()
		if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled echoAfter: %v, want context.Canceled", err)
		} else {
			t.Logf("canceled echoAfter: %v", err)
		}
		release()
		s.proc.waitLine(t, "echoAfter canceled")
		if got, err := echo(ctx, ef.Echo(), "after"); err != nil || got != "after" {
			t.Errorf("echo after cancel = %q, %v", got, err)
		}
		releaseEcho()
		s.expectCleanExit(t)
	})
}

// TestCppClientCancel has the C++ client drop a call running in Go: the
// Go method's context ends while the connection stays open, and the
// connection goes on.
func TestCppClientCancel(t *testing.T) {
	forServers(t, func(t *testing.T, tr string, p goServer) {
		started := make(chan struct{}, 1)
		ended := make(chan error, 1)
		p.hooks().started = func(uint32) { started <- struct{}{} }
		p.hooks().ended = func(err error) { ended <- err }
		var endErr error // set by the function below, read after it returned
		out := runCppClientWith(t, tr, "cancel", p, func(c *child) error {
			tell := func() error {
				if _, err := c.stdin.Write([]byte{'\n'}); err != nil {
					return fmt.Errorf("telling the C++ client: %w", err)
				}
				return nil
			}
			select {
			case <-started:
			case <-c.exited:
				return fmt.Errorf("C++ client exited before Go's echoAfter started")
			case <-time.After(patience):
				return fmt.Errorf("Go's echoAfter did not start within %v", patience)
			}
			if err := tell(); err != nil {
				return err
			}
			select {
			case endErr = <-ended:
			case <-c.exited:
				return fmt.Errorf("C++ client exited before Go's echoAfter ended")
			case <-time.After(patience):
				return fmt.Errorf("Go's echoAfter did not end within %v of being dropped", patience)
			}
			if endErr == nil {
				return fmt.Errorf("Go's echoAfter returned nil after the C++ client dropped it")
			}
			return tell()
		})
		t.Logf("Go echoAfter: %v", endErr)
		expectLines(t, out, "ok told that the call runs", "ok told that the call ended", "ok echo after cancel")
	})
}

// TestCppServerSeesDisconnect kills a Go client (this test binary, run as
// a helper) while the C++ server runs its call: the C++ server drops the
// call, sees the disconnection and exits cleanly.
func TestCppServerSeesDisconnect(t *testing.T) {
	for _, m := range helperModes {
		t.Run(m.path, func(t *testing.T) {
			requirePeer(t)
			helperEnd, cppEnd := filePair(t)
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cpp := startChild(t, peerPath, []string{"serve-fd", "3"}, cppEnd)
			helper := startChild(t, self, []string{"-test.run=^$"}, helperEnd, helperEnv+"=client-fd"+m.suffix)
			cpp.waitLine(t, "echoAfter started")
			helper.waitLine(t, "calling echoAfter")
			helper.kill()
			if err := cpp.wait(t); err != nil {
				t.Errorf("C++ server: %v", err)
			}
			expectLines(t, cpp.output(), "echoAfter canceled", "disconnected")
		})
	}
}
