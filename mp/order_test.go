package mp_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
)

// A method whose results are a capability can be called through before it
// returns: the pipelined call travels with the first, so both are sent
// before any Return comes back.
func TestPipelinedCallsNeedNoRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	gate := make(chan struct{})
	m := &gatedMaker{gate: gate}
	p := newPair(t, m, nil)
	// A first call settles the bootstrap capability.
	if err := p.maker.Fail(ctx, ""); err != nil {
		t.Fatal(err)
	}
	calls0, returns0 := p.calls.Load(), p.returns.Load()
	e := p.maker.(*mptestschema.MakerClient).MakeEchoPipelined(ctx)
	defer mp.Release(e)
	done := make(chan error, 1)
	go func() {
		got, err := e.Echo(ctx, "through the pipe")
		if err == nil && got != "through the pipe" {
			err = errors.New("echo returned " + got)
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for p.calls.Load()-calls0 < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls sent while makeEcho is held", p.calls.Load()-calls0)
		}
		time.Sleep(time.Millisecond)
	}
	if n := p.returns.Load() - returns0; n != 0 {
		t.Fatalf("%d returns came before makeEcho was let go", n)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := p.calls.Load() - calls0; n != 2 {
		t.Fatalf("makeEcho and a pipelined echo took %d calls, want 2", n)
	}
}

// gatedMaker's MakeEcho waits for its gate.
type gatedMaker struct {
	maker
	gate chan struct{}
}

func (m *gatedMaker) MakeEcho(ctx context.Context) (mptestschema.Echo, error) {
	select {
	case <-m.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return echo{}, nil
}

// A failed call's pipelined calls fail with its error.
func TestPipelineOnFailedCall(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &failingMaker{}, nil)
	e := p.maker.(*mptestschema.MakerClient).MakeEchoPipelined(ctx)
	defer mp.Release(e)
	if _, err := e.Echo(ctx, "x"); !errors.Is(err, errNoSuchThing) {
		t.Fatalf("echo pipelined on a failed makeEcho = %v, want its error", err)
	}
}

type failingMaker struct{ maker }

func (*failingMaker) MakeEcho(context.Context) (mptestschema.Echo, error) { return nil, errNoSuchThing }

func TestStreamDeliversInOrderWithFlowControl(t *testing.T) {
	ctx := testCtx(t)
	s := &orderSink{}
	p := newPair(t, &sinkMaker{s: s}, nil)
	sk, err := p.maker.Sink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(sk)
	const n = 5000
	for i := uint32(1); i <= n; i++ {
		if err := sk.Push(ctx, i); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if err := mp.Flush(ctx, sk); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != n {
		t.Fatalf("sink got %d pushes, want %d", len(s.got), n)
	}
	for i, v := range s.got {
		if v != uint32(i+1) {
			t.Fatalf("push %d arrived as number %d: calls overtook each other", v, i+1)
		}
	}
	if s.maxRunning != 1 {
		t.Fatalf("%d pushes ran at once on one object, want 1", s.maxRunning)
	}
}

// A stream call that fails makes every later one fail with its error.
func TestStreamErrorIsSticky(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &sinkMaker{s: &orderSink{fail: 100}}, nil)
	sk, err := p.maker.Sink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(sk)
	var sendErr error
	for i := uint32(1); i <= 100000 && sendErr == nil; i++ {
		sendErr = sk.Push(ctx, i)
	}
	flushErr := mp.Flush(ctx, sk)
	if flushErr == nil || !strings.Contains(flushErr.Error(), "push 100 refused") {
		t.Fatalf("Flush = %v, want push 100's error", flushErr)
	}
	if sendErr == nil {
		t.Fatal("pushes after the failed one kept succeeding")
	}
	if err := sk.Push(ctx, 1); err == nil || err.Error() != flushErr.Error() {
		t.Fatalf("push after the failure = %v, want %v", err, flushErr)
	}
}

type sinkMaker struct {
	maker
	s mptestschema.Sink
}

func (m *sinkMaker) Sink(context.Context) (mptestschema.Sink, error) { return m.s, nil }

// orderSink records what it is pushed, and how many pushes ran at once.
type orderSink struct {
	mu         sync.Mutex
	got        []uint32
	running    int
	maxRunning int
	fail       uint32
}

func (s *orderSink) Total(context.Context) (mptestschema.Sink_Total_Results, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mptestschema.Sink_Total_Results{Count: uint32(len(s.got))}, nil
}

func (s *orderSink) Push(ctx context.Context, n uint32) error {
	s.mu.Lock()
	s.running++
	s.maxRunning = max(s.maxRunning, s.running)
	s.mu.Unlock()
	if n%97 == 0 {
		time.Sleep(100 * time.Microsecond) // let later calls pile up
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	if s.fail != 0 && n == s.fail {
		return errors.New("push 100 refused")
	}
	s.got = append(s.got, n)
	return nil
}

// Calls on one object run one at a time, unless it takes concurrent
// calls.
func TestOneCallAtATime(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		ctx := testCtx(t)
		var e mptestschema.Echo = &countingEcho{}
		if concurrent {
			e = &concurrentEcho{}
		}
		p := newPair(t, &echoMaker{e: e}, nil)
		remote, err := p.maker.MakeEcho(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := remote.Echo(ctx, "x"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		mp.Release(remote)
		var most int32
		switch v := e.(type) {
		case *countingEcho:
			most = v.max.Load()
		case *concurrentEcho:
			most = v.max.Load()
		}
		if !concurrent && most != 1 {
			t.Fatalf("%d calls ran at once on one object, want 1", most)
		}
		if concurrent && most < 2 {
			t.Fatalf("an object taking concurrent calls never ran two at once (max %d)", most)
		}
	}
}

type echoMaker struct {
	maker
	e mptestschema.Echo
}

func (m *echoMaker) MakeEcho(context.Context) (mptestschema.Echo, error) { return m.e, nil }

type countingEcho struct {
	running, max atomic.Int32
}

func (c *countingEcho) Echo(ctx context.Context, s string) (string, error) {
	n := c.running.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	c.running.Add(-1)
	return s, nil
}

type concurrentEcho struct {
	mp.ConcurrentCalls
	countingEcho
}

// A method that calls back into its caller lets the callback run on its
// own object meanwhile (the object is the one whose method is waiting).
func TestReentrantCallOnBusyObject(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	cb, err := p.maker.Callback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(cb)
	// The server's callback calls ours, which calls the server's
	// callback again while its first call waits, and so on.
	d, err := cb.Call(ctx, 30, &callback{})
	if err != nil || d != 0 {
		t.Fatalf("reentrant calls = %d, %v", d, err)
	}
}

func TestInterceptorSeesCallsBothSides(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var seen []string
	icept := func(ctx context.Context, info *rpcconn.CallInfo, next func(context.Context) error) error {
		err := next(ctx)
		side := "client"
		if info.Server {
			side = "server"
		}
		mu.Lock()
		seen = append(seen, side+" "+info.Method.InterfaceName+"."+info.Method.MethodName)
		mu.Unlock()
		return err
	}
	p := newPair(t, &maker{}, &rpcconn.Options{Interceptor: icept})
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	if _, err := e.Echo(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"server Maker.makeEcho": false, "client Echo.echo": false, "server Echo.echo": false}
	for _, s := range seen {
		if _, ok := want[s]; ok {
			want[s] = true
		}
	}
	for s, ok := range want {
		if !ok {
			t.Errorf("interceptor did not see %q (saw %q)", s, seen)
		}
	}
}

// A proxy dropped without Close is released by the runtime, and the
// implementation learns that its last reference is gone.
func TestDroppedProxyIsReleased(t *testing.T) {
	ctx := testCtx(t)
	r := &releasedEcho{gone: make(chan struct{})}
	p := newPair(t, &echoMaker{e: r}, nil)
	func() {
		e, err := p.maker.MakeEcho(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Echo(ctx, "x"); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		runtime.GC()
		select {
		case <-r.gone:
			return
		case <-deadline:
			t.Fatal("the implementation never learned that its dropped proxy was released")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type releasedEcho struct {
	echo
	once sync.Once
	gone chan struct{}
}

func (r *releasedEcho) CapabilityReleased() { r.once.Do(func() { close(r.gone) }) }
