package mp_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/mp"
)

// How calls are read and served (rpcconn's reading role, see its package
// doc): a caller alone on its connection reads its own Return, a served
// call runs on the goroutine that read it, and neither wedges the
// connection when something blocks.

// Small calls one after the other: each runs inline in the server, its
// caller reads its Return, and no goroutine is started for it on either
// side (both are in this process).
func TestSmallCallsNeedNoGoroutine(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	for range 10 {
		if _, err := e.Echo(ctx, "warm"); err != nil {
			t.Fatal(err)
		}
	}
	c0, s0, g0 := p.client.RoleStats(), p.server.RoleStats(), goroutinesCreated()
	const n = 1000
	for i := range n {
		want := fmt.Sprint(i)
		if got, err := e.Echo(ctx, want); err != nil || got != want {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	g := goroutinesCreated() - g0
	c1, s1 := p.client.RoleStats(), p.server.RoleStats()
	t.Logf("%d calls: %d goroutines started; client %+v; server %+v", n, g, c1, s1)
	// A pause longer than the role's patience (a GC under -race, a busy
	// machine) has another goroutine take over reading for a call or so,
	// and a call on the object still running meanwhile waits its turn:
	// on a quiet machine nearly every call is inline and nearly every
	// Return read by its caller, on a loaded one (CI, -race, load 6)
	// fewer, so the bounds say "most", which a broken mechanism (none)
	// cannot meet.
	if inl := s1.Inline - s0.Inline; inl < n/2 {
		t.Errorf("%d of %d calls ran inline in the server", inl, n)
	}
	if own := c1.OwnReturns - c0.OwnReturns; own < n/4 {
		t.Errorf("callers read %d of %d Returns themselves", own, n)
	}
	if g > n/4 {
		t.Errorf("%d goroutines started for %d calls", g, n)
	}
}

// gateEcho's Echo("wait") waits for its gate, which Echo("open") on any
// gateEcho sharing it opens: the wallet's getBalance waiting for the
// blockConnected calls that arrive on the same connection.
type gateEcho struct {
	gate    chan struct{}
	started chan struct{}
}

func (g *gateEcho) Echo(ctx context.Context, s string) (string, error) {
	switch s {
	case "wait":
		close(g.started)
		select {
		case <-g.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	case "open":
		close(g.gate)
	}
	return s, nil
}

// twoEchoMaker makes its Echo values in turn.
type twoEchoMaker struct {
	maker
	mu sync.Mutex
	es []mptestschema.Echo
}

func (m *twoEchoMaker) MakeEcho(context.Context) (mptestschema.Echo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.es[0]
	m.es = m.es[1:]
	return e, nil
}

// A method that blocks where it runs, on the goroutine that read its
// call, does not stop the connection: another goroutine takes over
// reading, and serves the call that unblocks it.
func TestBlockedMethodDoesNotWedgeConnection(t *testing.T) {
	ctx := testCtx(t)
	gate := make(chan struct{})
	w := &gateEcho{gate: gate, started: make(chan struct{})}
	o := &gateEcho{gate: gate}
	p := newPair(t, &twoEchoMaker{es: []mptestschema.Echo{w, o}}, nil)
	waiter, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(waiter)
	opener, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(opener)
	s0 := p.server.RoleStats()
	done := make(chan error, 1)
	go func() {
		_, err := waiter.Echo(ctx, "wait")
		done <- err
	}()
	<-w.started
	start := time.Now()
	if _, err := opener.Echo(ctx, "open"); err != nil {
		t.Fatal(err)
	}
	t.Logf("the call behind the blocked method was served after %v", time.Since(start))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := p.server.RoleStats(); s.Takeovers == s0.Takeovers {
		t.Errorf("no goroutine took over reading from the blocked method: %+v", s)
	}
}

// retainingMaker keeps the capability Identity is given, to call it
// later, unasked.
type retainingMaker struct {
	maker
	mu   sync.Mutex
	kept mptestschema.Echo
}

func (m *retainingMaker) Identity(_ context.Context, c mptestschema.Echo) (mptestschema.Echo, error) {
	m.mu.Lock()
	m.kept = mp.Retain(c)
	m.mu.Unlock()
	return mp.Retain(c), nil
}

// A call the peer makes while no caller of ours reads (each read its own
// Return and left the role free) is served all the same, within the
// role's patience; and the peer's later calls at once.
func TestUnaskedCallIsServed(t *testing.T) {
	ctx := testCtx(t)
	m := &retainingMaker{}
	p := newPair(t, m, nil)
	mine, err := p.maker.Identity(ctx, echo{})
	if err != nil {
		t.Fatal(err)
	}
	mp.Release(mine)
	m.mu.Lock()
	kept := m.kept
	m.mu.Unlock()
	defer mp.Release(kept)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	c0 := p.client.RoleStats()
	var worst time.Duration
	for range 20 {
		// A call of ours, then at once one of the peer's.
		if _, err := e.Echo(ctx, "ours"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if got, err := kept.Echo(ctx, "unasked"); err != nil || got != "unasked" {
			t.Fatalf("the peer's call: %q, %v", got, err)
		}
		worst = max(worst, time.Since(start))
	}
	c := p.client.RoleStats()
	t.Logf("the peer's calls took %v at worst; client %+v", worst, c)
	// Once the peer has called, the client's goroutine keeps reading
	// (for peerCallWindow): its later calls are not left waiting for a
	// takeover each, as two peers calling each other in turn would be
	// if each left the role free after its own call.
	if n := c.Takeovers - c0.Takeovers; n > 3 {
		t.Errorf("%d of 20 calls from the peer waited for a takeover", n)
	}
}

// A method running inline that calls out through another connection has
// another goroutine read its own connection at once, rather than once the
// role's patience has run out.
func TestInlineMethodCallingOutHandsOff(t *testing.T) {
	ctx := testCtx(t)
	far := newPair(t, &maker{}, nil)
	farEcho, err := far.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(farEcho)
	near := newPair(t, &echoMaker{e: relayEcho{to: farEcho}}, nil)
	e, err := near.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	s0 := near.server.RoleStats()
	const n = 20
	for range n {
		if got, err := e.Echo(ctx, "relayed"); err != nil || got != "relayed" {
			t.Fatalf("%q, %v", got, err)
		}
	}
	// A call that arrives while the one before it, which gave the
	// reading away, is still finishing waits for its turn and runs on
	// that one's goroutine, which no longer reads: no hand-off then. How
	// many calls go each way depends on the scheduler (on a loaded
	// machine most may not run inline at all), but every call that ran
	// inline, and so called out while holding the reading, handed it off.
	s := near.server.RoleStats()
	t.Logf("server %+v", s)
	inline, handOffs := s.Inline-s0.Inline, s.HandOffs-s0.HandOffs
	if inline == 0 {
		t.Errorf("none of %d relayed calls ran inline", n)
	}
	if handOffs < inline {
		t.Errorf("%d relayed calls ran inline and called out, and only %d handed the reading off", inline, handOffs)
	}
}

// relayEcho echoes through another Echo.
type relayEcho struct{ to mptestschema.Echo }

func (r relayEcho) Echo(ctx context.Context, s string) (string, error) { return r.to.Echo(ctx, s) }

// A method running inline that calls back through its own connection
// reads the Return of its call back itself.
func TestInlineCallBackReadsItsReturn(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	cb, err := p.maker.Callback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(cb)
	s0 := p.server.RoleStats()
	const n = 20
	for range n {
		if d, err := cb.Call(ctx, 4, &callback{}); err != nil || d != 0 {
			t.Fatalf("%d, %v", d, err)
		}
	}
	s := p.server.RoleStats()
	t.Logf("server %+v", s)
	if s.OwnReturns-s0.OwnReturns < n {
		t.Errorf("the server's calls back read %d of their Returns themselves, want at least %d", s.OwnReturns-s0.OwnReturns, n)
	}
}

// slowSink's Push takes longer than the role's patience: the goroutine
// reading is taken over on each, and the pushes still run in order, one
// at a time.
type slowSink struct {
	orderSink
	running, most atomic.Int32
}

func (s *slowSink) Push(ctx context.Context, n uint32) error {
	r := s.running.Add(1)
	for {
		m := s.most.Load()
		if r <= m || s.most.CompareAndSwap(m, r) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond)
	s.running.Add(-1)
	return s.orderSink.Push(ctx, n)
}

func TestOrderKeptAcrossTakeovers(t *testing.T) {
	ctx := testCtx(t)
	s := &slowSink{}
	p := newPair(t, &sinkMaker{s: s}, nil)
	sk, err := p.maker.Sink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(sk)
	s0 := p.server.RoleStats()
	const n = 40
	for i := uint32(1); i <= n; i++ {
		if err := sk.Push(ctx, i); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if err := mp.Flush(ctx, sk); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := append([]uint32(nil), s.got...)
	s.mu.Unlock()
	if len(got) != n {
		t.Fatalf("sink got %d pushes, want %d", len(got), n)
	}
	for i, v := range got {
		if v != uint32(i+1) {
			t.Fatalf("push %d arrived as number %d", v, i+1)
		}
	}
	if m := s.most.Load(); m != 1 {
		t.Fatalf("%d pushes ran at once", m)
	}
	if st := p.server.RoleStats(); st.Takeovers == s0.Takeovers {
		t.Errorf("no takeover while pushes slower than the patience ran: %+v", st)
	}
}

// Many callers on one connection, some canceling at random moments: each
// call that succeeds gets its own result (the connection reuses what a
// call is made of once both its caller and the connection are done with
// it).
func TestConcurrentCallsWithCancellations(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &echoMaker{e: jitterEcho{}}, nil)
	var wg sync.WaitGroup
	var ok, canceled atomic.Int32
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := p.maker.MakeEcho(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			defer mp.Release(e)
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 200 {
				want := fmt.Sprintf("%d/%d", g, i)
				cctx, cancel := ctx, context.CancelFunc(func() {})
				if rng.IntN(3) == 0 {
					cctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(300))*time.Microsecond)
				}
				got, err := e.Echo(cctx, want)
				cancel()
				switch {
				case err == nil && got != want:
					t.Errorf("call %s got %q", want, got)
					return
				case err == nil:
					ok.Add(1)
				case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
					canceled.Add(1)
				default:
					t.Errorf("call %s: %v", want, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls returned, %d were canceled", ok.Load(), canceled.Load())
	if err := p.maker.Fail(ctx, ""); err != nil {
		t.Fatal(err)
	}
}

// jitterEcho takes up to 200 us.
type jitterEcho struct{ mp.ConcurrentCalls }

func (jitterEcho) Echo(_ context.Context, s string) (string, error) {
	if d := rand.IntN(400); d < 200 {
		time.Sleep(time.Duration(d) * time.Microsecond)
	}
	return s, nil
}

// A small call allocates at most 4 objects for both ends together: the
// result's string for the caller; the answer, the served call and the
// argument's string for the callee.
func TestSmallCallAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop what it pools")
	}
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	for range 100 {
		if _, err := e.Echo(ctx, "12345678"); err != nil {
			t.Fatal(err)
		}
	}
	n := testing.AllocsPerRun(2000, func() {
		if _, err := e.Echo(ctx, "12345678"); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.2f allocations per call, both ends", n)
	if n > 4 {
		t.Errorf("%.2f allocations per small call for both ends, want at most 4", n)
	}
}
