package peers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/server"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
)

// The go-capnp peer: go-capnp's own rpc package on the socketpair that
// process.Spawn makes, with the capnpc-go code and the servers of package
// bench's capnpc-go path, served by go-capnp's server package
// (server.New, as the generated X_ServerToClient does) rather than by
// protocol.NewServer, and called through the same generated proxies. So
// the difference from that path is the connection: go-capnp's rpc.Conn
// against the framework's. Options are go-capnp's defaults, a Go user's
// starting point: in particular no flow limiter on the Sink, so the
// stream is not bounded (flowcontrol.NopLimiter).

// gocapnpChildMain serves a bootstrap capability that answers Init's
// makeEcho (the reference program's other methods fail) and
// benchschema.Bench's methods, until the parent closes the connection.
func gocapnpChildMain() int {
	nc, err := spawnedConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocapnp child:", err)
		return 1
	}
	log, _ := warnLogger("gocapnp child")
	impl := &gocapnpInit{}
	methods := schema.Init_Methods(nil, impl)
	methods = benchschema.Bench_Methods(methods, impl)
	boot := capnp.NewClient(server.New(methods, impl, nil))
	conn := rpc.NewConn(rpc.NewStreamTransport(nc), &rpc.Options{BootstrapClient: boot, Logger: log})
	<-conn.Done()
	if err := conn.Close(); err != nil && !closedByPeer(err) {
		fmt.Fprintln(os.Stderr, "gocapnp child: close:", err)
		return 1
	}
	return 0
}

// closedByPeer reports whether err says no more than that the other side
// had gone.
func closedByPeer(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, rpc.ErrConnClosed)
}

// errNotServed answers the reference program's Init methods that the
// benchmarks do not use.
var errNotServed = errors.New("peers: not served by the benchmark child")

// gocapnpInit implements schema.Init_Server and benchschema.Bench_Server.
type gocapnpInit struct{}

func (*gocapnpInit) MakeEcho(_ context.Context, call schema.Init_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(schema.Echo_ServerToClient(gocapnpEcho{}))
}

func (*gocapnpInit) Hello(context.Context, schema.Init_hello) error { return errNotServed }

func (*gocapnpInit) SubscribeLifetime(context.Context, schema.Init_subscribeLifetime) error {
	return errNotServed
}

func (*gocapnpInit) Stop(context.Context, schema.Init_stop) error           { return errNotServed }
func (*gocapnpInit) MakeNode(context.Context, schema.Init_makeNode) error   { return errNotServed }
func (*gocapnpInit) MakeChain(context.Context, schema.Init_makeChain) error { return errNotServed }

func (*gocapnpInit) MakeWalletLoader(context.Context, schema.Init_makeWalletLoader) error {
	return errNotServed
}

func (*gocapnpInit) MakeSink(_ context.Context, call benchschema.Bench_makeSink) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSink(benchschema.Sink_ServerToClient(&gocapnpSink{}))
}

func (*gocapnpInit) Stats(_ context.Context, call benchschema.Bench_stats) error {
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

// gocapnpEcho is package bench's capnpc-go Echo, as it is there: the
// argument's bytes are copied once, into the results.
type gocapnpEcho struct{}

func (gocapnpEcho) Echo(_ context.Context, call schema.Echo_echo) error {
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
	// In pieces below 1 MiB, as package bench's does (Go copies 1 MiB or
	// more at once with non-temporal stores).
	dst := l.ToPtr().Data()
	for len(b) > 0 {
		n := copy(dst, b[:min(len(b), 512<<10)])
		dst, b = dst[n:], b[n:]
	}
	return capnp.Struct(res).SetPtr(0, l.ToPtr())
}

func (gocapnpEcho) EchoAfter(context.Context, schema.Echo_echoAfter) error { return errNotServed }

// gocapnpSink counts what is pushed into it; the counters are atomic only
// so that done may read them from anywhere.
type gocapnpSink struct {
	count, bytes atomic.Uint64
}

func (s *gocapnpSink) Push(_ context.Context, call benchschema.Sink_push) error {
	data, err := call.Args().Data()
	if err != nil {
		return err
	}
	s.count.Add(1)
	s.bytes.Add(uint64(len(data)))
	probe.Goroutines.Sample()
	return nil
}

func (s *gocapnpSink) Done(_ context.Context, call benchschema.Sink_done) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(s.count.Load())
	res.SetBytes(s.bytes.Load())
	return nil
}

// gocapnpPeer is the parent's side of a go-capnp child.
type gocapnpPeer struct {
	child   *process.Child
	conn    *rpc.Conn
	closing *atomic.Bool // set when close starts: its logger goes quiet
	init    schema.Init
	bench   benchschema.Bench // the same capability as init, seen as Bench
}

// startGoCapnp spawns the test binary at path as a go-capnp child with
// process.Spawn and runs go-capnp's rpc on the socket.
func startGoCapnp(ctx context.Context, path string) (*gocapnpPeer, error) {
	child, nc, err := process.Spawn(kindGoCapnp, &process.Config{Path: path, Env: childEnv(kindGoCapnp)})
	if err != nil {
		return nil, err
	}
	log, closing := warnLogger("peers")
	conn := rpc.NewConn(rpc.NewStreamTransport(nc), &rpc.Options{Logger: log})
	boot := conn.Bootstrap(ctx)
	return &gocapnpPeer{child: child, conn: conn, closing: closing,
		init: schema.Init(boot), bench: benchschema.Bench(boot.AddRef())}, nil
}

// makeEcho returns an Echo served by the child.
func (p *gocapnpPeer) makeEcho(ctx context.Context) (schema.Echo, error) {
	fut, release := p.init.MakeEcho(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Echo{}, err
	}
	return res.Result().AddRef(), nil
}

// gocapnpEchoCall makes one call as a program would, and checks the reply.
func gocapnpEchoCall(ctx context.Context, e schema.Echo, payload string) error {
	fut, release := e.Echo(ctx, func(p schema.Echo_echo_Params) error {
		return p.SetEcho(payload)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return err
	}
	// ResultBytes aliases the message, as in package bench.
	got, err := res.ResultBytes()
	if err != nil {
		return err
	}
	return checkReply(got, payload)
}

func (p *gocapnpPeer) makeSink(ctx context.Context) (benchschema.Sink, error) {
	fut, release := p.bench.MakeSink(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return benchschema.Sink{}, err
	}
	return res.Sink().AddRef(), nil
}

func gocapnpSinkDone(ctx context.Context, s benchschema.Sink) (count, bytes uint64, err error) {
	fut, release := s.Done(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, 0, err
	}
	return res.Count(), res.Bytes(), nil
}

func (p *gocapnpPeer) stats(ctx context.Context) (probe.Stats, error) {
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
func (p *gocapnpPeer) close() error {
	if p.conn == nil {
		return nil
	}
	p.closing.Store(true)
	p.init.Release()
	p.bench.Release()
	err := p.conn.Close()
	p.conn = nil
	if status := p.child.Stop(5 * time.Second); !status.Success() {
		return fmt.Errorf("gocapnp child %d: %s", p.child.Pid(), status)
	}
	if err != nil && !closedByPeer(err) {
		return fmt.Errorf("close the connection: %w", err)
	}
	return nil
}
