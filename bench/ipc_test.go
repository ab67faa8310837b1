package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// childExe is the name under which the ipc child is spawned: a symlink to
// the test binary in a directory given as ipc.Options.ExecutableDir.
const childExe = "benchchild"

// warnLogger logs warnings and errors to stderr, so that a benchmark
// whose connection misbehaves says so, and stays quiet otherwise. If
// failedExits is not nil, it counts there the children that ipc reports
// as not having exited 0.
func warnLogger(name string, failedExits *atomic.Int64) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	if failedExits != nil {
		h = exitCounter{h, failedExits}
	}
	return slog.New(h).With("process", name, "pid", os.Getpid())
}

// exitCounter counts ipc's log line for a child that did not exit 0 (a
// warning "child process exited"; a clean exit is the same line at Info).
// Other warnings pass unchecked: go-capnp logs some errors at the end of
// a connection that say nothing about the benchmark.
type exitCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h exitCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "child process exited" {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h exitCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return exitCounter{h.Handler.WithAttrs(attrs), h.n}
}

func (h exitCounter) WithGroup(name string) slog.Handler {
	return exitCounter{h.Handler.WithGroup(name), h.n}
}

// ipcChildMain is the ipc child: exactly what a spawned executable's main
// does.
func ipcChildMain() int {
	i := ipc.New(childExe, os.Args[0], newBenchInit, &ipc.Options{Logger: warnLogger(childExe, nil)})
	if handled, status := i.StartSpawnedProcess(os.Args); handled {
		return status
	}
	fmt.Fprintln(os.Stderr, "ipc child: started without -ipcfd")
	return 1
}

// newBenchInit is the child's InitFactory. Its Init capability serves
// Init's methods (hello and makeEcho from ipc.BaseInit, as every
// executable does) and, beside them, benchschema.Bench's.
func newBenchInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	impl := &benchInit{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}}
	methods := schema.Init_Methods(nil, impl)
	methods = benchschema.Bench_Methods(methods, impl)
	return schema.Init(protocol.NewServer(methods, impl, &protocol.ServerOptions{Logger: ctx.Logger}))
}

type benchInit struct {
	ipc.BaseInit
}

func (b *benchInit) MakeSink(_ context.Context, call benchschema.Bench_makeSink) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s := &sink{}
	return res.SetSink(benchschema.Sink(protocol.NewServer(benchschema.Sink_Methods(nil, s), s, &protocol.ServerOptions{Logger: b.Ctx.Logger})))
}

func (b *benchInit) Stats(_ context.Context, call benchschema.Bench_stats) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewStats()
	if err != nil {
		return err
	}
	s := ownStats()
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

// sink counts what is pushed into it. go-capnp runs its methods one at a
// time; the counters are atomic only so that done may read them from
// anywhere.
type sink struct {
	count, bytes atomic.Uint64
}

func (s *sink) Push(_ context.Context, call benchschema.Sink_push) error {
	data, err := call.Args().Data()
	if err != nil {
		return err
	}
	s.count.Add(1)
	s.bytes.Add(uint64(len(data)))
	childGoroutines.sample()
	return nil
}

func (s *sink) Done(_ context.Context, call benchschema.Sink_done) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(s.count.Load())
	res.SetBytes(s.bytes.Load())
	return nil
}

// ipcPeer is the parent's side of an ipc child, spawned through the
// public API.
type ipcPeer struct {
	ipc         *ipc.Ipc
	init        schema.Init
	bench       benchschema.Bench // the same capability as init, seen as Bench
	failedExits *atomic.Int64     // children that did not exit 0
}

// childDir returns a directory holding childExe, a symlink to the test
// binary, for ipc.Options.ExecutableDir.
func childDir(tb testing.TB) string {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, childExe)); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// newParentIpc returns the parent's Ipc, spawning ipc children from dir.
// It counts the children that did not exit 0 in *failedExits.
func newParentIpc(dir string, failedExits *atomic.Int64) *ipc.Ipc {
	return ipc.New("bench", os.Args[0], newBenchInit, &ipc.Options{
		Logger:        warnLogger("bench", failedExits),
		ExecutableDir: dir,
		Env:           append(os.Environ(), envChild+"="+kindIPC),
	})
}

func startIPC(tb testing.TB) *ipcPeer {
	tb.Helper()
	failedExits := new(atomic.Int64)
	i := newParentIpc(childDir(tb), failedExits)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	init, err := i.SpawnProcess(ctx, childExe)
	if err != nil {
		i.Close()
		tb.Fatal(err)
	}
	p := &ipcPeer{ipc: i, init: init, bench: benchschema.Bench(capnp.Client(init)), failedExits: failedExits}
	tb.Cleanup(func() {
		if err := p.close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// makeEcho returns an Echo served by the child.
func (p *ipcPeer) makeEcho(ctx context.Context) (schema.Echo, error) {
	fut, release := p.init.MakeEcho(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Echo{}, err
	}
	return res.Result().AddRef(), nil
}

// echo makes one call as a program would, and checks the reply.
func echo(ctx context.Context, e schema.Echo, payload string) error {
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
	if len(got) != len(payload) || (len(got) > 0 && got[len(got)-1] != payload[len(payload)-1]) {
		return fmt.Errorf("echo: got %d bytes back, sent %d", len(got), len(payload))
	}
	return nil
}

func (p *ipcPeer) makeSink(ctx context.Context) (benchschema.Sink, error) {
	fut, release := p.bench.MakeSink(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return benchschema.Sink{}, err
	}
	return res.Sink().AddRef(), nil
}

func sinkDone(ctx context.Context, s benchschema.Sink) (count, bytes uint64, err error) {
	fut, release := s.Done(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, 0, err
	}
	return res.Count(), res.Bytes(), nil
}

func (p *ipcPeer) stats(ctx context.Context) (childStats, error) {
	fut, release := p.bench.Stats(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return childStats{}, err
	}
	s, err := res.Stats()
	if err != nil {
		return childStats{}, err
	}
	return childStats{
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

// close releases the Init proxy, which stops the child, and waits until
// it has been reaped. It returns an error if the child did not exit 0.
func (p *ipcPeer) close() error {
	if p.ipc == nil {
		return nil
	}
	p.init.Release()
	err := p.ipc.Close()
	p.ipc = nil
	if err != nil {
		return fmt.Errorf("close ipc: %w", err)
	}
	if p.failedExits.Load() > 0 {
		return errors.New("the child did not exit 0 (see its status on stderr)")
	}
	return nil
}
