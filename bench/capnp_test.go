package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// The capnpc-go path: go-capnp's generated API (capnpschema.Init and Echo,
// benchschema.Bench and Sink) on this module's own connection, with
// servers made by protocol.NewServer, as the benchmarks measured it before
// package ipc became generic over the application's Init. Package ipc no
// longer knows go-capnp's types, so this child is started as the raw and
// net/rpc ones are (process.Spawn of the test binary) and serves its
// bootstrap capability with protocol.Serve on the inherited socket; the
// parent reaches it with protocol.Connect. Every call measured takes the
// same path as before: capnpc-go's client code, the connection, and
// go-capnp's server package in the child. What ipc added around it (its
// hello, the lifetime subscription) ran once per child, outside the timed
// loops, except in BenchmarkSpawn.

// warnLogger logs warnings and errors to stderr, so that a benchmark
// whose connection misbehaves says so, and stays quiet otherwise.
func warnLogger(name string) *slog.Logger {
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(h).With("process", name, "pid", os.Getpid())
}

// capnpChildMain is the capnpc-go child: it serves a bootstrap capability
// that answers Init's methods (makeEcho; the reference program's others
// fail) and, beside them, benchschema.Bench's, until the parent closes
// the socket.
func capnpChildMain() int {
	nc, err := spawnedConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, "capnp child:", err)
		return 1
	}
	log := warnLogger("capnp child")
	newInit := func(*protocol.Conn) capnp.Client {
		impl := &capnpInit{log: log}
		methods := schema.Init_Methods(nil, impl)
		methods = benchschema.Bench_Methods(methods, impl)
		return protocol.NewServer(methods, impl, &protocol.ServerOptions{Logger: log})
	}
	if err := protocol.Serve(context.Background(), nc, newInit, &protocol.Options{Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, "capnp child: serve:", err)
		return 1
	}
	return 0
}

// errNotServed answers the reference program's Init methods that the
// benchmarks do not use.
var errNotServed = errors.New("bench: not served by the benchmark child")

// capnpInit implements schema.Init_Server and benchschema.Bench_Server.
type capnpInit struct {
	log *slog.Logger
}

func (b *capnpInit) MakeEcho(_ context.Context, call schema.Init_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	var e capnpEcho
	return res.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, &protocol.ServerOptions{Logger: b.log})))
}

func (*capnpInit) Hello(context.Context, schema.Init_hello) error { return errNotServed }

func (*capnpInit) SubscribeLifetime(context.Context, schema.Init_subscribeLifetime) error {
	return errNotServed
}

func (*capnpInit) Stop(context.Context, schema.Init_stop) error           { return errNotServed }
func (*capnpInit) MakeNode(context.Context, schema.Init_makeNode) error   { return errNotServed }
func (*capnpInit) MakeChain(context.Context, schema.Init_makeChain) error { return errNotServed }

func (*capnpInit) MakeWalletLoader(context.Context, schema.Init_makeWalletLoader) error {
	return errNotServed
}

func (b *capnpInit) MakeSink(_ context.Context, call benchschema.Bench_makeSink) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s := &capnpSink{}
	return res.SetSink(benchschema.Sink(protocol.NewServer(benchschema.Sink_Methods(nil, s), s, &protocol.ServerOptions{Logger: b.log})))
}

func (*capnpInit) Stats(_ context.Context, call benchschema.Bench_stats) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewStats()
	if err != nil {
		return err
	}
	s := probe.Own()
	w.SetPid(int32(s.PID))
	w.SetGoroutines(uint32(s.Goroutines))
	w.SetPeakGoroutines(uint32(s.PeakGoroutines))
	w.SetMallocs(s.Mallocs)
	w.SetPeakRssKiB(s.PeakRSSKiB)
	w.SetGoroutinesCreated(s.GoroutinesCreated)
	w.SetContextSwitches(s.ContextSwitches)
	w.SetCpuNs(s.CPUNs)
	return nil
}

// capnpEcho is the Echo that package ipc served before it became generic
// (ipc.BaseInit's), kept as it was so that the figures stay comparable.
type capnpEcho struct{}

func (capnpEcho) Echo(_ context.Context, call schema.Echo_echo) error {
	// Bytes, not a string: the argument is copied once, straight into
	// the results (the arguments stay valid until Echo returns).
	b, err := call.Args().EchoBytes()
	if err != nil {
		return fmt.Errorf("read argument: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := capnp.NewUInt8List(res.Segment(), int32(len(b)+1))
	if err != nil {
		return err
	}
	// In pieces below 1 MiB: Go copies 1 MiB or more at once with
	// non-temporal stores, which leave the results out of the cache just
	// before the connection's write(2) reads them.
	dst := l.ToPtr().Data()
	for len(b) > 0 {
		n := copy(dst, b[:min(len(b), 512<<10)])
		dst, b = dst[n:], b[n:]
	}
	return capnp.Struct(res).SetPtr(0, l.ToPtr())
}

func (capnpEcho) EchoAfter(context.Context, schema.Echo_echoAfter) error { return errNotServed }

// capnpSink counts what is pushed into it. go-capnp runs its methods one
// at a time; the counters are atomic only so that done may read them from
// anywhere.
type capnpSink struct {
	count, bytes atomic.Uint64
}

func (s *capnpSink) Push(_ context.Context, call benchschema.Sink_push) error {
	data, err := call.Args().Data()
	if err != nil {
		return err
	}
	s.count.Add(1)
	s.bytes.Add(uint64(len(data)))
	probe.Goroutines.Sample()
	return nil
}

func (s *capnpSink) Done(_ context.Context, call benchschema.Sink_done) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(s.count.Load())
	res.SetBytes(s.bytes.Load())
	return nil
}

// capnpPeer is the parent's side of a capnpc-go child.
type capnpPeer struct {
	child *process.Child
	conn  *protocol.Conn
	init  schema.Init
	bench benchschema.Bench // the same capability as init, seen as Bench
}

func startCapnp(tb testing.TB) *capnpPeer {
	tb.Helper()
	child, nc := spawnChild(tb, kindCapnp)
	p, err := connectCapnp(tb.Context(), child, nc)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// connectCapnp runs the connection on nc, the socket of child, and
// returns the peer; nc belongs to the connection from then on.
func connectCapnp(ctx context.Context, child *process.Child, nc net.Conn) (*capnpPeer, error) {
	conn, boot, err := protocol.Connect(ctx, nc, &protocol.Options{Logger: warnLogger("bench")})
	if err != nil {
		return nil, err
	}
	return &capnpPeer{child: child, conn: conn, init: schema.Init(boot), bench: benchschema.Bench(boot)}, nil
}

// makeEcho returns an Echo served by the child.
func (p *capnpPeer) makeEcho(ctx context.Context) (schema.Echo, error) {
	fut, release := p.init.MakeEcho(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Echo{}, err
	}
	return res.Result().AddRef(), nil
}

// capnpEchoCall makes one call as a program would, and checks the reply.
func capnpEchoCall(ctx context.Context, e schema.Echo, payload string) error {
	fut, release := e.Echo(ctx, func(p schema.Echo_echo_Params) error {
		return p.SetEcho(payload)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return err
	}
	// ResultBytes aliases the message: the one copy a caller who only
	// looks at the reply can avoid.
	got, err := res.ResultBytes()
	if err != nil {
		return err
	}
	return checkReply(got, payload)
}

// checkReply checks an echo's reply by its length and last byte.
func checkReply[G, S string | []byte](got G, sent S) error {
	if len(got) != len(sent) || (len(got) > 0 && got[len(got)-1] != sent[len(sent)-1]) {
		return fmt.Errorf("echo: got %d bytes back, sent %d", len(got), len(sent))
	}
	return nil
}

func (p *capnpPeer) makeSink(ctx context.Context) (benchschema.Sink, error) {
	fut, release := p.bench.MakeSink(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return benchschema.Sink{}, err
	}
	return res.Sink().AddRef(), nil
}

func capnpSinkDone(ctx context.Context, s benchschema.Sink) (count, bytes uint64, err error) {
	fut, release := s.Done(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, 0, err
	}
	return res.Count(), res.Bytes(), nil
}

func (p *capnpPeer) stats(ctx context.Context) (probe.Stats, error) {
	fut, release := p.bench.Stats(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return probe.Stats{}, err
	}
	s, err := res.Stats()
	if err != nil {
		return probe.Stats{}, err
	}
	return probe.Stats{
		PID:               int(s.Pid()),
		Goroutines:        int(s.Goroutines()),
		PeakGoroutines:    int(s.PeakGoroutines()),
		Mallocs:           s.Mallocs(),
		PeakRSSKiB:        s.PeakRssKiB(),
		GoroutinesCreated: s.GoroutinesCreated(),
		ContextSwitches:   s.ContextSwitches(),
		CPUNs:             s.CpuNs(),
	}, nil
}

// close releases the bootstrap capability and closes the connection, on
// which the child exits; it returns an error unless the child exited 0.
// It is idempotent.
func (p *capnpPeer) close() error {
	if p.conn == nil {
		return nil
	}
	p.init.Release()
	err := p.conn.Close()
	p.conn = nil
	if status := p.child.Stop(5 * time.Second); !status.Success() {
		return fmt.Errorf("capnp child %d: %s", p.child.Pid(), status)
	}
	if err != nil {
		return fmt.Errorf("close the connection: %w", err)
	}
	return nil
}
