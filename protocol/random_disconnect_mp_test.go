package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Random disconnects on the generated path (random_disconnect_test.go's
// cuts, on sessions of calls through mpgen's proxies and mp's server).

// rdObject counts one capability's release, once, into its owner's
// count.
type rdObject struct {
	once     sync.Once
	released *atomic.Int32
}

func (o *rdObject) CapabilityReleased() { o.once.Do(func() { o.released.Add(1) }) }

// rdSide is what one side of a session served: how many capabilities it
// made and how many of them were released, and the errors of the calls
// its methods made, which may be their ctx's once their connection ended.
type rdSide struct {
	made, released atomic.Int32

	mu   sync.Mutex
	errs []error
}

func (s *rdSide) object() *rdObject {
	s.made.Add(1)
	return &rdObject{released: &s.released}
}

// noteInner checks the error of a call that a method made with its own
// ctx: nil, a disconnection, or ctx's error once ctx has ended.
func (s *rdSide) noteInner(ctx context.Context, what string, err error) {
	if err == nil || errors.Is(err, mp.ErrDisconnected) || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return
	}
	s.mu.Lock()
	s.errs = append(s.errs, fmt.Errorf("%s (ctx: %v): %w, want nil, ErrDisconnected or ctx's error", what, ctx.Err(), err))
	s.mu.Unlock()
}

// rdMaker is the server of a session.
type rdMaker struct {
	mptestschema.UnimplementedMaker
	*rdObject
	side *rdSide
}

func newRdMaker(side *rdSide) *rdMaker { return &rdMaker{rdObject: side.object(), side: side} }

func (m *rdMaker) MakeEcho(context.Context) (mptestschema.Echo, error) {
	return &rdEcho{m.side.object()}, nil
}

func (m *rdMaker) Callback(context.Context) (mptestschema.Callback, error) {
	return &rdCallback{rdObject: m.side.object(), side: m.side}, nil
}

func (m *rdMaker) Sink(context.Context) (mptestschema.Sink, error) {
	return &rdSink{rdObject: m.side.object()}, nil
}

func (m *rdMaker) Count(_ context.Context, items []mptestschema.Item) (mptestschema.Maker_Count_Results, error) {
	var sum uint64
	for _, it := range items {
		sum += it.Value
	}
	return mptestschema.Maker_Count_Results{N: uint32(len(items)), Sum: sum}, nil
}

type rdEcho struct{ *rdObject }

func (*rdEcho) Echo(_ context.Context, s string) (string, error) { return s, nil }

// rdCallback calls back with depth-1 until 0, on either side.
type rdCallback struct {
	*rdObject
	side *rdSide
}

func (c *rdCallback) Call(ctx context.Context, depth uint32, back mptestschema.Callback) (uint32, error) {
	if depth == 0 {
		return 0, nil
	}
	d, err := back.Call(ctx, depth-1, c)
	c.side.noteInner(ctx, "a callback's call back", err)
	return d, err
}

type rdSink struct {
	*rdObject
	mu           sync.Mutex
	total        uint64
	count        uint32
	unorderedErr bool
}

func (s *rdSink) Push(_ context.Context, n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n != s.count+1 {
		s.unorderedErr = true
	}
	s.total += uint64(n)
	s.count++
	return nil
}

func (s *rdSink) Total(context.Context) (mptestschema.Sink_Total_Results, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unorderedErr {
		return mptestschema.Sink_Total_Results{}, errors.New("pushes arrived out of order")
	}
	return mptestschema.Sink_Total_Results{Total: s.total, Count: s.count}, nil
}

// errorLog is a slog.Handler that keeps the records at Error level: what
// protocol, rpcconn and mp log when they catch a bug (a panic in the
// reader, the writer or a method).
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelError }
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler               { return l }
func (l *errorLog) WithGroup(string) slog.Handler                    { return l }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	l.mu.Unlock()
	return nil
}

const (
	mpPushes = 8 // stream calls per session
	mpChecks = 7 // outcomes a session checks: count, echo, callback, its call, sink, Flush, total
)

// mpVariant varies a session beyond its cut.
type mpVariant struct {
	// pipelined: the Callback and the Sink are taken with the generated
	// XPipelined methods, so that the calls on them go through go-capnp's
	// client until their call has returned (stream calls too).
	pipelined bool
	// deadline, if not zero, ends the context of the session's calls
	// after it.
	deadline time.Duration
}

// mpDisconnectSession runs one session on the generated path with the
// given cut: a plain call (count), a call pipelined on a capability result
// (makeEcho, echo), a callback into the caller and back (callback, call
// with depth 3), stream pushes and a Flush (sink), a call after them
// (total), and the release of every proxy. Every outcome is the right
// answer or an error matching mp.ErrDisconnected, or the calls' ctx's
// error once it has ended (so may the errors of the calls that methods
// make with their own ctx); both connections end, Serve with nil or
// ErrDisconnected; every cleanup hook runs once; every capability either
// side made is released; nothing is logged at Error.
func mpDisconnectSession(c cut, v mpVariant, payload string, record bool) (sessionResult, error) {
	var res sessionResult
	start := time.Now()
	a, b, err := socketpairNoT()
	if err != nil {
		return res, err
	}
	ca, cb := newCutConn(a), newCutConn(b)
	ca.record, cb.record = record, record
	if c.limit >= 0 {
		victim := ca
		if c.server {
			victim = cb
		}
		victim.cutWrites = c.writes
		victim.left.Store(c.limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	errLog := &errorLog{}
	opts := &protocol.Options{Logger: slog.New(errLog)}

	var server, client rdSide
	var serverCleanups, clientCleanups, proxyCleanups atomic.Int32
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(ctx, cb, func(conn *protocol.Conn) capnp.Client {
			conn.AddCleanup(func() { serverCleanups.Add(1) })
			return mptestschema.MakerInterface.Capnp(newRdMaker(&server))
		}, opts)
	}()
	conn, proxy, err := protocol.Connect(ctx, ca, opts)
	if err != nil {
		b.Close()
		<-served
		return res, fmt.Errorf("Connect: %w", err)
	}
	conn.AddCleanup(func() { clientCleanups.Add(1) })
	if err := protocol.AddCleanup(proxy, func() { proxyCleanups.Add(1) }); err != nil {
		return res, fmt.Errorf("AddCleanup: %w", err)
	}

	stopTimer := make(chan struct{})
	var timer sync.WaitGroup
	if c.limit < 0 {
		victim := a
		if c.server {
			victim = b
		}
		timer.Add(1)
		go func() {
			defer timer.Done()
			select {
			case <-time.After(c.delay):
				victim.Close()
			case <-stopTimer:
			}
		}()
	}

	callCtx := ctx
	if v.deadline > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, v.deadline)
		defer cancel()
	}
	var errs []error
	// check records an outcome: ok says that a call that succeeded gave
	// the right answer.
	check := func(what string, ok bool, err error) bool {
		switch {
		case err == nil && ok:
			res.calls++
			return true
		case err == nil:
			errs = append(errs, fmt.Errorf("%s: wrong answer", what))
		case errors.Is(err, mp.ErrDisconnected):
			res.failed = true
		case callCtx.Err() != nil && errors.Is(err, callCtx.Err()):
			res.failed = true
		default:
			errs = append(errs, fmt.Errorf("%s: %w, want success, mp.ErrDisconnected or ctx's error (ctx: %v)", what, err, callCtx.Err()))
		}
		return false
	}
	maker := mptestschema.MakerInterface.FromCapnp(proxy).(*mptestschema.MakerClient)

	items := []mptestschema.Item{{Value: 1, Label: "one"}, {Value: 2}, {Value: 39, Label: "three"}}
	n, err := maker.Count(callCtx, items)
	check("count", n.N == 3 && n.Sum == 42, err)

	e := maker.MakeEchoPipelined(callCtx)
	got, err := e.Echo(callCtx, payload)
	check("echo on a pipelined Echo", got == payload, err)
	mp.Release(e)

	local := &rdCallback{rdObject: client.object(), side: &client}
	calledBack := false
	var cbk mptestschema.Callback
	if v.pipelined {
		cbk = maker.CallbackPipelined(callCtx)
	} else if cbk, err = maker.Callback(callCtx); !check("callback", true, err) {
		cbk = nil
	}
	if cbk != nil {
		depth, err := cbk.Call(callCtx, 3, local)
		calledBack = true
		check("call with a callback", depth == 0, err)
		mp.Release(cbk)
	}

	var sink mptestschema.Sink
	if v.pipelined {
		sink = maker.SinkPipelined(callCtx)
	} else if sink, err = maker.Sink(callCtx); !check("sink", true, err) {
		sink = nil
	}
	if sink != nil {
		var sum uint64
		for i := uint32(1); i <= mpPushes; i++ {
			if sink.Push(callCtx, i) == nil {
				sum += uint64(i)
			}
		}
		flushed := mp.Flush(callCtx, sink)
		check("Flush", true, flushed)
		total, err := sink.Total(callCtx)
		// Pushes were delivered in order; after a Flush that succeeded,
		// all of them.
		check("total", total.Count <= mpPushes && (flushed != nil || total.Count == mpPushes && total.Total == sum), err)
		mp.Release(sink)
	}
	mp.Release(maker)
	close(stopTimer)
	timer.Wait()

	conn.Close()
	select {
	case <-conn.Done():
	case <-time.After(patience):
		return res, fmt.Errorf("client connection did not end")
	}
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, protocol.ErrDisconnected) {
			errs = append(errs, fmt.Errorf("Serve = %w, want nil or ErrDisconnected", err))
		}
	case <-time.After(patience):
		return res, fmt.Errorf("Serve did not return")
	}
	for name, n := range map[string]int32{"server Conn": serverCleanups.Load(), "client Conn": clientCleanups.Load(), "proxy": proxyCleanups.Load()} {
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s cleanup ran %d times, want once", name, n))
		}
	}
	// Both connections are over: every capability either side served
	// has been released (the client's own callback, if it was passed).
	if !calledBack {
		client.released.Add(1)
	}
	deadline := time.Now().Add(patience)
	for server.released.Load() != server.made.Load() || client.released.Load() != client.made.Load() {
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("capabilities released: %d of %d the server made, %d of %d the client made",
				server.released.Load(), server.made.Load(), client.released.Load(), client.made.Load()))
			break
		}
		time.Sleep(time.Millisecond)
	}
	for _, side := range []*rdSide{&server, &client} {
		side.mu.Lock()
		errs = append(errs, side.errs...)
		side.mu.Unlock()
	}
	errLog.mu.Lock()
	for _, m := range errLog.msgs {
		errs = append(errs, fmt.Errorf("logged at Error: %s", m))
	}
	errLog.mu.Unlock()
	if record {
		res.clientWrote, res.serverWrote = ca.written, cb.written
	}
	res.duration = time.Since(start)
	return res, errors.Join(errs...)
}

// Sessions on the generated path, each ended at a random point: three in
// four at a random byte of a random message (Bootstrap, Call, Return,
// Finish, Release) in one direction of either side's socket, the others
// after a random delay by closing either side's socket. Nothing panics
// (nothing is logged at Error), races, hangs or leaks (goroutines,
// descriptors, proxies): see mpDisconnectSession for what each session
// checks. MP_DISCONNECT_ITERATIONS overrides the count.
func TestMPDisconnectAtRandomPoints(t *testing.T) {
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	if s := os.Getenv("MP_DISCONNECT_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("MP_DISCONNECT_ITERATIONS: %v", err)
		}
		iterations = n
	}
	const workers = 4
	payload := strings.Repeat("0123456789abcdef", 64)

	// A whole session, uncut and recorded, sizes the ranges and names
	// the messages a cut falls in (the layout of other sessions differs
	// once a call has failed). It also warms up what the process keeps
	// before the baseline.
	full, err := mpDisconnectSession(cut{limit: -1, delay: time.Hour}, mpVariant{}, payload, true)
	if err != nil || full.failed || full.calls != mpChecks {
		t.Fatalf("uncut session: %d of %d checks passed, failed %v: %v", full.calls, mpChecks, full.failed, err)
	}
	clientSpans, err := frameSpans(full.clientWrote)
	if err != nil {
		t.Fatalf("client's stream: %v", err)
	}
	serverSpans, err := frameSpans(full.serverWrote)
	if err != nil {
		t.Fatalf("server's stream: %v", err)
	}
	if full, err = mpDisconnectSession(cut{limit: -1, delay: time.Hour}, mpVariant{}, payload, false); err != nil || full.calls != mpChecks {
		t.Fatalf("uncut session: %+v, %v", full, err)
	}
	goroutines0 := runtime.NumGoroutine()
	fds0 := fdcheck.Count(t)
	leaks := mp.StartLeakCheck()
	defer leaks.Stop()

	var (
		next    atomic.Int64
		mu      sync.Mutex
		errs    []string
		byCalls [mpChecks + 1]int
		byPoint = make(map[string]int)
		wg      sync.WaitGroup
	)
	maxDelay := 2 * full.duration
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				i := next.Add(1)
				if i > int64(iterations) {
					return
				}
				c := cut{server: rng.IntN(2) == 0, writes: rng.IntN(2) == 0, limit: -1}
				point := ""
				if rng.IntN(4) != 0 {
					spans := clientSpans
					if c.server == c.writes {
						spans = serverSpans
					}
					if k := rng.IntN(len(spans) + 1); k < len(spans) {
						c.limit = spans[k].start + rng.Int64N(spans[k].end-spans[k].start)
					} else {
						c.limit = spans[len(spans)-1].end
					}
					point = where(spans, c.limit)
				} else {
					c.delay = time.Duration(rng.Int64N(int64(maxDelay) + 1))
				}
				v := mpVariant{pipelined: rng.IntN(2) == 0}
				if rng.IntN(4) == 0 {
					v.deadline = time.Duration(rng.Int64N(int64(maxDelay) + 1))
				}
				res, err := mpDisconnectSession(c, v, payload, false)
				mu.Lock()
				if err != nil {
					if len(errs) < 10 {
						errs = append(errs, fmt.Sprintf("iteration %d, %v (%s), %+v: %v", i, c, point, v, err))
					}
				} else {
					byCalls[res.calls]++
					if point != "" {
						byPoint[point]++
					}
				}
				stop := len(errs) >= 10
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for _, e := range errs {
		t.Error(e)
	}
	points := make([]string, 0, len(byPoint))
	for p, n := range byPoint {
		points = append(points, fmt.Sprintf("%s %d", p, n))
	}
	slices.Sort(points)
	t.Logf("%d sessions in %s with %d workers; an uncut session: %d messages, %d bytes from the client, %d messages, %d bytes from the server, %s",
		iterations, took.Round(time.Millisecond), workers, len(clientSpans), clientSpans[len(clientSpans)-1].end,
		len(serverSpans), serverSpans[len(serverSpans)-1].end, full.duration.Round(time.Microsecond))
	t.Logf("sessions by checks passed (0-%d): %v; byte-offset cuts by where they fell: %s", mpChecks, byCalls, strings.Join(points, ", "))
	for _, kind := range []string{"bootstrap", "call", "return", "finish", "release"} {
		if byPoint["inside "+kind] == 0 && iterations >= 300 {
			t.Errorf("no cut fell inside a %s message", kind)
		}
	}
	for _, l := range leaks.Leaks() {
		t.Errorf("a proxy leaked: %s", l)
	}

	deadline := time.Now().Add(patience)
	for {
		g, f := runtime.NumGoroutine(), fdcheck.Count(t)
		if g <= goroutines0 && f <= fds0 {
			t.Logf("goroutines %d -> %d, descriptors %d -> %d", goroutines0, g, fds0, f)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after the sessions: %d goroutines (%d before), %d descriptors (%d before)\n%s",
				g, goroutines0, f, fds0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
