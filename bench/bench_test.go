package bench

import (
	"net/rpc"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
)

// Sub-benchmark names: the implementations compared.
const (
	implRaw    = "raw"    // the raw socketpair baseline
	implNetRPC = "netrpc" // net/rpc, the other baseline
	implIPC    = "ipc"    // ours: ipc.SpawnProcess and the typed proxies
)

// callers is how many goroutines BenchmarkConcurrent16 calls from.
const callers = 16

// streamPayload is the size of one streamed message.
const streamPayload = 64

// BenchmarkEcho is one round trip of an 8-byte and a 4 KiB payload.
func BenchmarkEcho(b *testing.B) {
	b.Run("8B", func(b *testing.B) { benchEcho(b, 8) })
	b.Run("4KiB", func(b *testing.B) { benchEcho(b, 4<<10) })
}

// BenchmarkEcho1MiB is one round trip of a 1 MiB payload. Its peak RSS
// figures are those of the target when run with -benchtime 1000x.
func BenchmarkEcho1MiB(b *testing.B) { benchEcho(b, 1<<20) }

func benchEcho(b *testing.B, size int) {
	b.Run(implRaw, func(b *testing.B) {
		p := startRaw(b)
		frame := newFrame(opEcho, size)
		b.SetBytes(int64(size))
		pr := startProbe(b, p.stats)
		for range b.N {
			if err := p.echo(frame); err != nil {
				b.Fatal(err)
			}
		}
		pr.stop("")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implNetRPC, func(b *testing.B) {
		p := startNetRPC(b)
		payload := newFrame(opEcho, size)[rawHeader:]
		b.SetBytes(int64(size))
		pr := startProbe(b, p.stats)
		for range b.N {
			if err := p.echo(payload); err != nil {
				b.Fatal(err)
			}
		}
		pr.stop("")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implIPC, func(b *testing.B) {
		ctx := b.Context()
		p := startIPC(b)
		e, err := p.makeEcho(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Release()
		payload := string(newFrame(opEcho, size)[rawHeader:])
		b.SetBytes(int64(size))
		pr := startProbe(b, func() (childStats, error) { return p.stats(ctx) })
		for range b.N {
			if err := echo(ctx, e, payload); err != nil {
				b.Fatal(err)
			}
		}
		pr.stop("")
	})
}

// BenchmarkConcurrent16 is 16 goroutines making 8-byte calls on one
// connection (one net/rpc client; one Echo capability) at once; ns/op is
// wall time divided by the calls of all of them.
func BenchmarkConcurrent16(b *testing.B) {
	payload := newFrame(opEcho, 8)[rawHeader:]
	b.Run(implNetRPC, func(b *testing.B) {
		p := startNetRPC(b)
		pr := startProbe(b, p.stats)
		if err := concurrently(b.N, func() error { return p.echo(payload) }); err != nil {
			b.Fatal(err)
		}
		pr.stop("calls/s")
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implIPC, func(b *testing.B) {
		ctx := b.Context()
		p := startIPC(b)
		e, err := p.makeEcho(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Release()
		s := string(payload)
		pr := startProbe(b, func() (childStats, error) { return p.stats(ctx) })
		if err := concurrently(b.N, func() error { return echo(ctx, e, s) }); err != nil {
			b.Fatal(err)
		}
		pr.stop("calls/s")
	})
}

// concurrently makes n calls from callers goroutines and returns the
// first error.
func concurrently(n int, call func() error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := call(); err != nil {
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
	b.Run("pipelined", func(b *testing.B) {
		ctx := b.Context()
		p := startIPC(b)
		pr := startProbe(b, func() (childStats, error) { return p.stats(ctx) })
		for range b.N {
			made, release := p.init.MakeEcho(ctx, nil)
			err := echo(ctx, made.Result(), payload)
			release()
			if err != nil {
				b.Fatal(err)
			}
		}
		pr.stop("")
	})
	b.Run("sequential", func(b *testing.B) {
		ctx := b.Context()
		p := startIPC(b)
		pr := startProbe(b, func() (childStats, error) { return p.stats(ctx) })
		for range b.N {
			e, err := p.makeEcho(ctx)
			if err != nil {
				b.Fatal(err)
			}
			err = echo(ctx, e, payload)
			e.Release()
			if err != nil {
				b.Fatal(err)
			}
		}
		pr.stop("")
	})
}

// BenchmarkStream64B streams 64-byte messages one way, one message per
// call (or frame) and no batching, and then waits until the child has
// counted them all. The figures are for -benchtime 100000x.
func BenchmarkStream64B(b *testing.B) {
	b.Run(implRaw, func(b *testing.B) {
		p := startRaw(b)
		frame := newFrame(opSink, streamPayload)
		b.SetBytes(streamPayload)
		pr := startProbe(b, p.stats)
		for range b.N {
			if err := p.push(frame); err != nil {
				b.Fatal(err)
			}
		}
		count, _, err := p.done()
		pr.stop("msgs/s")
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
		pr := startProbe(b, p.stats)
		for range b.N {
			p.client.Go("NetRPC.Push", payload, &empty, done)
		}
		for range b.N {
			if c := <-done; c.Error != nil {
				b.Fatal(c.Error)
			}
		}
		count, _, err := p.done()
		pr.stop("msgs/s")
		checkCount(b, count, err)
		if err := p.close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run(implIPC, func(b *testing.B) {
		ctx := b.Context()
		p := startIPC(b)
		s, err := p.makeSink(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Release()
		payload := newFrame(opSink, streamPayload)[rawHeader:]
		b.SetBytes(streamPayload)
		pr := startProbe(b, func() (childStats, error) { return p.stats(ctx) })
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
		count, _, err := sinkDone(ctx, s)
		pr.stop("msgs/s")
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
// completed call on it: "ipc" spawns with ipc.SpawnProcess (which says
// hello to the child) and waits for makeEcho().echo(); "exec" runs the
// same binary, which exits at the top of main, and waits for it. Stopping
// the ipc child is not timed.
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
	b.Run(implIPC, func(b *testing.B) {
		ctx := b.Context()
		dir := childDir(b)
		var failedExits atomic.Int64
		for range b.N {
			b.StopTimer()
			i := newParentIpc(dir, &failedExits)
			b.StartTimer()
			init, err := i.SpawnProcess(ctx, childExe)
			if err != nil {
				i.Close()
				b.Fatal(err)
			}
			made, release := init.MakeEcho(ctx, nil)
			err = echo(ctx, made.Result(), "first")
			b.StopTimer()
			release()
			init.Release()
			i.Close()
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if n := failedExits.Load(); n > 0 {
			b.Fatalf("%d children did not exit 0 (see their status on stderr)", n)
		}
	})
}
