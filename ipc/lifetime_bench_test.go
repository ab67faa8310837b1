package ipc

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"syscall"
	"testing"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// BenchmarkLifetimeStream streams 100k lifetime events per iteration to a
// subscriber at the other end of a socketpair and reports events per
// second, the most goroutines seen and the peak heap in use. Events are
// recorded in batches that the subscriber's queue holds, each followed by
// a Flush, since recording never waits for a subscriber by design.
func BenchmarkLifetimeStream(b *testing.B) {
	const events, batch = 100_000, 512
	var maxGoroutines int
	var peakHeap uint64
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		a, c := fileConnB(b, fds[0]), fileConnB(b, fds[1])
		got := make(chan struct{}, events+batch+16)
		sink := countingListener{got}
		served := make(chan error, 1)
		go func() {
			served <- protocol.Serve(context.Background(), c, func(*protocol.Conn) capnpClient {
				return capnpClient(schema.LifetimeListener(protocol.NewServer(schema.LifetimeListener_Methods(nil, sink), sink, nil)))
			}, nil)
		}()
		conn, boot, err := protocol.Connect(context.Background(), a, nil)
		if err != nil {
			b.Fatal(err)
		}
		l := newLifetime("bench", slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
		unsubscribe := l.Subscribe(schema.LifetimeListener(boot))
		<-got // the start-up event
		b.StartTimer()
		for sent := 0; sent < events; sent += batch {
			for range batch {
				l.record(schema.LifetimeEvent_Kind_startup, schema.Subsystem_database)
			}
			if err := l.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
		}
		for range (events + batch - 1) / batch * batch {
			<-got
		}
		b.StopTimer()
		unsubscribe()
		l.close()
		conn.Close()
		<-served
		b.StartTimer()
	}
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(maxGoroutines), "max-goroutines")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
}

type countingListener struct{ got chan struct{} }

func (c countingListener) Event(context.Context, schema.LifetimeListener_event) error {
	c.got <- struct{}{}
	return nil
}

func fileConnB(b *testing.B, fd int) netConn {
	b.Helper()
	f := osNewFile(fd)
	defer f.Close()
	c, err := netFileConn(f)
	if err != nil {
		b.Fatal(err)
	}
	return c
}
