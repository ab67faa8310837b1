package bench

import (
	"net/rpc"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/mpbench"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/mp"
)

// Sub-benchmark names: the implementations compared.
const (
	implRaw    = "raw"    // the raw socketpair baseline
	implNetRPC = "netrpc" // net/rpc, the other baseline
	implMP     = "mp"     // the generated path: mpgen's interfaces through ipc
	implMPData = "mpdata" // the same, echoing Data rather than Text, lent and borrowed
	implCapnp  = "capnp"  // the capnpc-go path: go-capnp's generated API on our connection
)

// How the callers of BenchmarkConcurrent16 share capabilities.
const (
	shared    = "shared"    // one capability for all callers
	perCaller = "percaller" // one capability per caller
)

// callers is how many goroutines BenchmarkConcurrent16 calls from.
const callers = 16

// streamPayload is the size of one streamed message.
const streamPayload = 64

// BenchmarkEcho is one round trip of an 8-byte and a 4 KiB payload.
func BenchmarkEcho(b *testing.B) {
	b.Run("8B", func(b *testing.B) { benchEcho(b, 8, false) })
	b.Run("4KiB", func(b *testing.B) { benchEcho(b, 4<<10, false) })
}

// BenchmarkEcho1MiB is one round trip of a 1 MiB payload, with the
// generated path's Data echo beside its Text one. Its peak RSS figures
// are those of the target when run with -benchtime 1000x.
func BenchmarkEcho1MiB(b *testing.B) { benchEcho(b, 1<<20, true) }

func benchEcho(b *testing.B, size int, withData bool) {
	b.Run(implRaw, func(b *testing.B) {
		p := startRaw(b)
		frame := newFrame(opEcho, size)
		b.SetBytes(int64(size))
		pr := probe.Start(b, p.stats)
		for range b.N {
			if err := p.echo(frame); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implNetRPC, func(b *testing.B) {
		p := startNetRPC(b)
		payload := newFrame(opEcho, size)[rawHeader:]
		b.SetBytes(int64(size))
		pr := probe.Start(b, p.stats)
		for range b.N {
			if err := p.echo(payload); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implMP, func(b *testing.B) {
		ctx := b.Context()
		p := startMP(b)
		e, err := p.init.MakeEcho(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer mp.Release(e)
		payload := string(newFrame(opEcho, size)[rawHeader:])
		b.SetBytes(int64(size))
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			if err := mpEchoText(ctx, e, payload); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
	})
	if withData {
		b.Run(implMPData, func(b *testing.B) {
			ctx := b.Context()
			p := startMP(b)
			e, err := p.init.MakeEcho(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer mp.Release(e)
			payload := newFrame(opEcho, size)[rawHeader:]
			b.SetBytes(int64(size))
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			// The caller lends its bytes and borrows the result's,
			// until it has checked them.
			lend := mp.Lend(ctx)
			for range b.N {
				cctx, release := mp.Borrow(lend)
				err := mpEchoData(cctx, e, payload)
				release()
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
	}
	b.Run(implCapnp, func(b *testing.B) {
		ctx := b.Context()
		p := startCapnp(b)
		e, err := p.makeEcho(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Release()
		payload := string(newFrame(opEcho, size)[rawHeader:])
		b.SetBytes(int64(size))
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			if err := capnpEchoCall(ctx, e, payload); err != nil {
				b.Fatal(err)
			}
		}
		pr.Stop("")
	})
}

// BenchmarkConcurrent16 is 16 goroutines making 8-byte calls on one
// connection at once: one net/rpc client; one Echo capability for all
// ("shared") or one each ("percaller"). A capability's calls are served
// one at a time, in order, by both our paths; net/rpc serves each call
// in a goroutine of its own. ns/op is wall time divided by the calls of
// all of them.
func BenchmarkConcurrent16(b *testing.B) {
	payload := newFrame(opEcho, 8)[rawHeader:]
	s := string(payload)
	b.Run(implNetRPC, func(b *testing.B) {
		p := startNetRPC(b)
		pr := probe.Start(b, p.stats)
		if err := concurrently(b.N, func(int) error { return p.echo(payload) }); err != nil {
			b.Fatal(err)
		}
		pr.Stop("calls/s")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implMP, func(b *testing.B) {
		for _, sharing := range []string{shared, perCaller} {
			b.Run(sharing, func(b *testing.B) {
				ctx := b.Context()
				p := startMP(b)
				echoes := make([]mpbench.Echo, callers)
				for i := range echoes {
					if i > 0 && sharing == shared {
						echoes[i] = echoes[0]
						continue
					}
					e, err := p.init.MakeEcho(ctx)
					if err != nil {
						b.Fatal(err)
					}
					defer mp.Release(e)
					echoes[i] = e
				}
				pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
				if err := concurrently(b.N, func(i int) error { return mpEchoText(ctx, echoes[i], s) }); err != nil {
					b.Fatal(err)
				}
				pr.Stop("calls/s")
			})
		}
	})
	b.Run(implCapnp, func(b *testing.B) {
		for _, sharing := range []string{shared, perCaller} {
			b.Run(sharing, func(b *testing.B) {
				ctx := b.Context()
				p := startCapnp(b)
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
				if err := concurrently(b.N, func(i int) error { return capnpEchoCall(ctx, echoes[i], s) }); err != nil {
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

// BenchmarkPipelined is makeEcho().echo() with an 8-byte payload:
// "pipelined" sends the echo call on the promised Echo before makeEcho
// has returned, one round trip in all; "sequential" waits for makeEcho
// first, two round trips. Both release the Echo each time.
func BenchmarkPipelined(b *testing.B) {
	const payload = "pipeline"
	b.Run(implMP, func(b *testing.B) {
		b.Run("pipelined", func(b *testing.B) {
			ctx := b.Context()
			p := startMP(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				e := p.init.MakeEchoPipelined(ctx)
				err := mpEchoText(ctx, e, payload)
				mp.Release(e)
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
		b.Run("sequential", func(b *testing.B) {
			ctx := b.Context()
			p := startMP(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				e, err := p.init.MakeEcho(ctx)
				if err != nil {
					b.Fatal(err)
				}
				err = mpEchoText(ctx, e, payload)
				mp.Release(e)
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
	})
	b.Run(implCapnp, func(b *testing.B) {
		b.Run("pipelined", func(b *testing.B) {
			ctx := b.Context()
			p := startCapnp(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				made, release := p.init.MakeEcho(ctx, nil)
				err := capnpEchoCall(ctx, made.Result(), payload)
				release()
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
		b.Run("sequential", func(b *testing.B) {
			ctx := b.Context()
			p := startCapnp(b)
			pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
			for range b.N {
				e, err := p.makeEcho(ctx)
				if err != nil {
					b.Fatal(err)
				}
				err = capnpEchoCall(ctx, e, payload)
				e.Release()
				if err != nil {
					b.Fatal(err)
				}
			}
			pr.Stop("")
		})
	})
}

// BenchmarkStream64B streams 64-byte messages one way, one message per
// call (or frame) and no batching, and then waits until the child has
// counted them all. The targets are stated for -benchtime 100000x.
func BenchmarkStream64B(b *testing.B) {
	b.Run(implRaw, func(b *testing.B) {
		p := startRaw(b)
		frame := newFrame(opSink, streamPayload)
		b.SetBytes(streamPayload)
		pr := probe.Start(b, p.stats)
		for range b.N {
			if err := p.push(frame); err != nil {
				b.Fatal(err)
			}
		}
		count, _, err := p.done()
		pr.Stop("msgs/s")
		checkCount(b, count, err)
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implNetRPC, func(b *testing.B) {
		p := startNetRPC(b)
		payload := newFrame(opSink, streamPayload)[rawHeader:]
		// Asynchronous calls, each answered on done, which must have room
		// for every answer: net/rpc drops those that find it full.
		done := make(chan *rpc.Call, b.N)
		var empty struct{}
		b.SetBytes(streamPayload)
		pr := probe.Start(b, p.stats)
		for range b.N {
			p.client.Go("NetRPC.Push", payload, &empty, done)
		}
		for range b.N {
			if c := <-done; c.Error != nil {
				b.Fatal(c.Error)
			}
		}
		count, _, err := p.done()
		pr.Stop("msgs/s")
		checkCount(b, count, err)
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implMP, func(b *testing.B) {
		ctx := b.Context()
		p := startMP(b)
		s, err := p.init.MakeSink(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer mp.Release(s)
		payload := newFrame(opSink, streamPayload)[rawHeader:]
		b.SetBytes(streamPayload)
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			if err := s.Push(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := mp.Flush(ctx, s); err != nil {
			b.Fatal(err)
		}
		done, err := s.Done(ctx)
		pr.Stop("msgs/s")
		checkCount(b, done.Count, err)
	})
	b.Run(implCapnp, func(b *testing.B) {
		ctx := b.Context()
		p := startCapnp(b)
		s, err := p.makeSink(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Release()
		payload := newFrame(opSink, streamPayload)[rawHeader:]
		b.SetBytes(streamPayload)
		pr := probe.Start(b, func() (probe.Stats, error) { return p.stats(ctx) })
		for range b.N {
			err := s.Push(ctx, func(p benchschema.Sink_push_Params) error {
				return p.SetData(payload)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := s.WaitStreaming(); err != nil {
			b.Fatal(err)
		}
		count, _, err := capnpSinkDone(ctx, s)
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

// BenchmarkSpawn is the time from asking for a child to the first
// completed call on it. "exec" runs the same binary, which exits at the
// top of main, and waits for it. "mp" spawns with ipc.Spawn and waits
// for makeEcho().echo(), pipelined; ipc's handshake (hello, the lifetime
// subscription) travels with those calls. "capnp" spawns with
// process.Spawn, connects with protocol.Connect and waits for the same
// calls through capnpc-go's code: no handshake. Stopping a child is not
// timed, and each has exited before the next is spawned.
func BenchmarkSpawn(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("exec", func(b *testing.B) {
		env := append(os.Environ(), envChild+"="+kindExit)
		for range b.N {
			cmd := exec.Command(self)
			cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(implMP, func(b *testing.B) {
		ctx := b.Context()
		i := newMPIpc()
		defer i.Close()
		for range b.N {
			p, err := spawnMP(ctx, i)
			if err != nil {
				b.Fatal(err)
			}
			e := p.init.MakeEchoPipelined(ctx)
			err = mpEchoText(ctx, e, "first")
			b.StopTimer()
			mp.Release(e)
			if cerr := p.close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run(implCapnp, func(b *testing.B) {
		ctx := b.Context()
		env := append(os.Environ(), envChild+"="+kindCapnp)
		for range b.N {
			child, nc, err := spawnProcess(self, kindCapnp, env)
			if err != nil {
				b.Fatal(err)
			}
			p, err := connectCapnp(ctx, child, nc)
			if err != nil {
				child.Stop(0)
				b.Fatal(err)
			}
			made, release := p.init.MakeEcho(ctx, nil)
			err = capnpEchoCall(ctx, made.Result(), "first")
			b.StopTimer()
			release()
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
