package peers

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// The benchmarks have package bench's names, with the peers' kinds as the
// last element (grpc, grpcdata, gocapnp, peersexec), so that bench/report
// puts each beside the figure of package bench it compares with. Each run
// of a benchmark function spawns its own child (not timed).

// How the callers of BenchmarkConcurrent16 share capabilities, as in
// package bench.
const (
	shared    = "shared"    // one capability for all callers
	perCaller = "percaller" // one capability per caller
)

// callers is how many goroutines BenchmarkConcurrent16 calls from.
const callers = 16

// streamPayload is the size of one streamed message.
const streamPayload = 64

// startGRPCBench starts a gRPC child for a benchmark and stops it when
// the benchmark ends.
func startGRPCBench(tb testing.TB) *grpcPeer {
	tb.Helper()
	p, err := startGRPC(self(tb))
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

// startGoCapnpBench starts a go-capnp child for a benchmark and stops it
// when the benchmark ends.
func startGoCapnpBench(tb testing.TB) *gocapnpPeer {
	tb.Helper()
	p, err := startGoCapnp(tb.Context(), self(tb))
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

// BenchmarkEcho is one round trip of an 8-byte and a 4 KiB payload.
func BenchmarkEcho(b *testing.B) {
	b.Run("8B", func(b *testing.B) { benchEcho(b, 8, false) })
	b.Run("4KiB", func(b *testing.B) { benchEcho(b, 4<<10, false) })
}

// BenchmarkEcho1MiB is one round trip of a 1 MiB payload, with gRPC's
// bytes echo beside its string one.
func BenchmarkEcho1MiB(b *testing.B) { benchEcho(b, 1<<20, true) }

func benchEcho(b *testing.B, size int, withData bool) {
	data := payload(size)
	text := string(data)
	b.Run(kindGRPC, func(b *testing.B) {
		ctx := b.Context()
		p := startGRPCBench(b)
		if err := p.echo(ctx, text); err != nil { // connects
			b.Fatal(err)
		}
		b.SetBytes(int64(size))
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			if err := p.echo(ctx, text); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
	})
	if withData {
		b.Run(implGRPCData, func(b *testing.B) {
			ctx := b.Context()
			p := startGRPCBench(b)
			if err := p.echoData(ctx, data); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				if err := p.echoData(ctx, data); err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
	}
	b.Run(kindGoCapnp, func(b *testing.B) {
		ctx := b.Context()
		p := startGoCapnpBench(b)
		e, err := p.makeEcho(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Release()
		b.SetBytes(int64(size))
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			if err := gocapnpEchoCall(ctx, e, text); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
	})
}

// BenchmarkConcurrent16 is 16 goroutines making 8-byte calls on one
// connection at once: one gRPC client connection (its calls are
// multiplexed on one HTTP/2 connection and each is served in a goroutine
// of its own), or one go-capnp Echo for all ("shared", its calls served
// one at a time) or one each ("percaller"). ns/op is wall time divided by
// the calls of all of them.
func BenchmarkConcurrent16(b *testing.B) {
	s := string(payload(8))
	b.Run(kindGRPC, func(b *testing.B) {
		ctx := b.Context()
		p := startGRPCBench(b)
		if err := p.echo(ctx, s); err != nil {
			b.Fatal(err)
		}
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		if err := concurrently(b.N, func(int) error { return p.echo(ctx, s) }); err != nil {
			b.Fatal(err)
		}
		pr.Stop("calls/s")
	})
	b.Run(kindGoCapnp, func(b *testing.B) {
		for _, sharing := range []string{shared, perCaller} {
			b.Run(sharing, func(b *testing.B) {
				ctx := b.Context()
				p := startGoCapnpBench(b)
				echoes := make([]schema.Echo, callers)
				for i := range echoes {
					if i > 0 && sharing == shared {
						echoes[i] = echoes[0]
						continue
					}
					e, err := p.makeEcho(ctx)
					if err != nil {
						b.Fatal(err)
					}
					defer e.Release()
					echoes[i] = e
				}
				pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
				if err := concurrently(b.N, func(i int) error { return gocapnpEchoCall(ctx, echoes[i], s) }); err != nil {
					b.Fatal(err)
				}
				pr.Stop("calls/s")
			})
		}
	})
}

// concurrently makes n calls from callers goroutines, each calling with
// its own index, and returns the first error.
func concurrently(n int, call func(caller int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := call(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when closed and empty
}

// BenchmarkPipelined is go-capnp's makeEcho().echo() with an 8-byte
// payload, pipelined (one round trip) and sequential (two), the Echo
// released each time, as package bench measures its own. gRPC has no
// promise pipelining.
func BenchmarkPipelined(b *testing.B) {
	const text = "pipeline"
	b.Run(kindGoCapnp, func(b *testing.B) {
		b.Run("pipelined", func(b *testing.B) {
			ctx := b.Context()
			p := startGoCapnpBench(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				made, release := p.init.MakeEcho(ctx, nil)
				err := gocapnpEchoCall(ctx, made.Result(), text)
				release()
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
		b.Run("sequential", func(b *testing.B) {
			ctx := b.Context()
			p := startGoCapnpBench(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				e, err := p.makeEcho(ctx)
				if err != nil {
					b.Fatal(err)
				}
				err = gocapnpEchoCall(ctx, e, text)
				e.Release()
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
	})
}

// BenchmarkStream64B streams 64-byte messages one way and then waits
// until the child has counted them all: for gRPC, one Send per message on
// one client-streaming call, whose reply is the count; for go-capnp, one
// `-> stream` push per message, then WaitStreaming and a done call.
func BenchmarkStream64B(b *testing.B) {
	data := payload(streamPayload)
	b.Run(kindGRPC, func(b *testing.B) {
		ctx := b.Context()
		p := startGRPCBench(b)
		if err := p.echo(ctx, "connect"); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(streamPayload)
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		count, _, err := p.push(ctx, b.N, data)
		pr.Stop("msgs/s")
		checkCount(b, count, err)
	})
	b.Run(kindGoCapnp, func(b *testing.B) {
		ctx := b.Context()
		p := startGoCapnpBench(b)
		s, err := p.makeSink(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Release()
		b.SetBytes(streamPayload)
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			err := s.Push(ctx, func(p benchschema.Sink_push_Params) error { return p.SetData(data) })
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := s.WaitStreaming(); err != nil {
			b.Fatal(err)
		}
		count, _, err := gocapnpSinkDone(ctx, s)
		pr.Stop("msgs/s")
		checkCount(b, count, err)
	})
}

func checkCount(b *testing.B, count uint64, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	if count != uint64(b.N) {
		b.Fatalf("the child counted %d messages, %d were sent", count, b.N)
	}
}

// BenchmarkSpawn is the time from starting a child to the first
// completed call on it. "peersexec" runs this test binary, which exits
// at the top of main, and waits for it: the bare exec that the peers'
// figures compare with (package bench's binary is another). "grpc" starts
// a gRPC child, reads its handshake line and makes the first Echo, which
// connects. "gocapnp" spawns with process.Spawn, bootstraps and makes the
// pipelined makeEcho().echo(). Stopping a child is not timed, and each
// has exited before the next is started.
func BenchmarkSpawn(b *testing.B) {
	path := self(b)
	b.Run(kindExit, func(b *testing.B) {
		for range b.N {
			if err := bareExec(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(kindGRPC, func(b *testing.B) {
		ctx := b.Context()
		for range b.N {
			p, err := startGRPC(path)
			if err != nil {
				b.Fatal(err)
			}
			err = p.echo(ctx, "first")
			b.StopTimer()
			if cerr := p.close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run(kindGoCapnp, func(b *testing.B) {
		ctx := b.Context()
		for range b.N {
			p, err := startGoCapnp(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			err = firstGoCapnpCall(ctx, p)
			b.StopTimer()
			if cerr := p.close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

func firstGoCapnpCall(ctx context.Context, p *gocapnpPeer) error {
	made, release := p.init.MakeEcho(ctx, nil)
	defer release()
	return gocapnpEchoCall(ctx, made.Result(), "first")
}
