package rpcconn

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// maxGoroutines samples runtime.NumGoroutine until stop is closed.
func maxGoroutines(stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		m := 0
		for {
			if n := runtime.NumGoroutine(); n > m {
				m = n
			}
			select {
			case <-stop:
				out <- m
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	return out
}

// Streaming calls (what capnpc-go generates for "-> stream") are bounded
// by MaxCalls: the sender waits, so neither goroutines (go-capnp starts
// one per streamed call, in capnp.Client.SendStreamCall) nor memory grow
// with the number of messages.
func TestStreamingFlowControl(t *testing.T) {
	cl, _ := connPair(t, &Options{MaxCalls: 16}, &Options{BootstrapClient: newTestServer().client(), MaxCalls: 16})
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()
	if _, err := echo(ctx, schema.Echo(boot), "warm"); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	stop := make(chan struct{})
	peak := maxGoroutines(stop)
	const n = 20000
	m := capnp.Method{InterfaceID: testschema.Slow_TypeID, MethodID: 1}
	for i := 0; i < n; i++ {
		err := boot.SendStreamCall(ctx, capnp.Send{
			Method:   m,
			ArgsSize: capnp.ObjectSize{PointerCount: 1},
			PlaceArgs: func(s capnp.Struct) error {
				return testschema.Slow_echo_Params(s).SetS("event")
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := boot.WaitStreaming(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	// Each streamed call holds one of go-capnp's SendStreamCall
	// goroutines until its Return: at most MaxCalls (16) live, plus as
	// many again that have finished but not yet exited on a loaded
	// machine. 20000 calls without the bound would show thousands.
	if p := <-peak; p > base+4*16 {
		t.Fatalf("peak goroutines %d, base %d: not bounded by MaxCalls", p, base)
	}
}

// The number of goroutines does not grow with calls in flight on our
// side: 200 calls blocked in the server use the server package's
// goroutines (it runs each call that called Go in its own), and none of
// ours.
func TestNoGoroutinePerCall(t *testing.T) {
	ts := newTestServer()
	cl, _ := connPair(t, nil, &Options{BootstrapClient: ts.client()})
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()
	if _, err := echo(ctx, schema.Echo(boot), "warm"); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	const n = 200
	var wg sync.WaitGroup
	var failed atomic.Int32
	var rels []capnp.ReleaseFunc
	var futs []testschema.Slow_sleep_Results_Future
	for i := 0; i < n; i++ {
		f, rel := testschema.Slow(boot).Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
			p.SetMs(60_000)
			return nil
		})
		futs, rels = append(futs, f), append(rels, rel)
	}
	waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == n })
	// The server package runs one goroutine per call that called Go;
	// beyond those, nothing per call.
	if g := runtime.NumGoroutine(); g > base+n+4 {
		t.Fatalf("%d goroutines with %d calls in flight, base %d", g, n, base)
	}
	close(ts.release)
	for i := range futs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := futs[i].Struct(); err != nil {
				failed.Add(1)
			}
			rels[i]()
		}(i)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed", failed.Load())
	}
}

// Calls to a `-> stream` method (recognised from the registered schema)
// are limited to about StreamWindow in flight, whatever MaxCalls says, so
// go-capnp's goroutine per streamed call stays bounded; the caller waits
// meanwhile, and every call arrives once the server catches up.
func TestStreamWindow(t *testing.T) {
	if !isStreamMethod(capnp.Method{InterfaceID: schema.LifetimeListener_TypeID, MethodID: 0}) {
		t.Fatal("LifetimeListener.event not recognised as a stream method")
	}
	if isStreamMethod(capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0}) {
		t.Fatal("Echo.echo taken for a stream method")
	}
	gate := make(chan struct{})
	var served atomic.Int64
	srvHook := capnp.NewClient(server.New([]server.Method{{
		Method: capnp.Method{InterfaceID: schema.LifetimeListener_TypeID, MethodID: 0},
		Impl: func(ctx context.Context, call *server.Call) error {
			<-gate
			served.Add(1)
			return nil
		},
	}}, nil, nil))
	var received atomic.Int64
	cl, _ := connPair(t, nil, &Options{BootstrapClient: srvHook, Observe: func(sent bool, m rpccp.Message) {
		if !sent && m.Which() == rpccp.Message_Which_call {
			received.Add(1)
		}
	}})
	var openGate sync.Once
	// Before connPair's cleanup closes the connections: the server's
	// calls wait for the gate.
	defer openGate.Do(func() { close(gate) })
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()
	l := schema.LifetimeListener(boot)
	const n = 3000
	base := runtime.NumGoroutine()
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := l.Event(ctx, func(p schema.LifetimeListener_event_Params) error { return nil }); err != nil {
				sent <- err
				return
			}
		}
		sent <- l.WaitStreaming()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for received.Load() < StreamWindow && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // would more arrive?
	// The calls made while few were in flight are not counted.
	if got := received.Load(); got < StreamWindow || got > StreamWindow+streamLookupMin {
		t.Fatalf("%d streamed calls in flight, want %d to %d", got, StreamWindow, StreamWindow+streamLookupMin)
	}
	if g := runtime.NumGoroutine() - base; g > StreamWindow+streamLookupMin+10 {
		t.Errorf("%d more goroutines while at most %d calls are in flight", g, StreamWindow+streamLookupMin)
	}
	openGate.Do(func() { close(gate) })
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := served.Load(); got != n {
		t.Errorf("%d calls served, want %d", got, n)
	}
}
