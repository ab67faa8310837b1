package rpcconn

import (
	"context"
	"io"
	"runtime/metrics"
	"testing"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// BenchmarkEcho8B measures an 8-byte echo round trip over a socketpair,
// client and server in this process, with our connection on both ends,
// go-capnp's rpc on both ends, and one of each (to split the costs by
// side); raw is one 8-byte write and read each way, the floor.
func BenchmarkEcho8B(b *testing.B) {
	for _, k := range []struct {
		name                 string
		ourClient, ourServer bool
		cancelable           bool // a context that can end, as b.Context()
		perCall              bool // a context of its own for each call, canceled after it
	}{{"ours", true, true, false, false}, {"ours-ctx", true, true, true, false}, {"ours-callctx", true, true, false, true},
		{"gocapnp", false, false, false, false}, {"ours-client", true, false, false, false}, {"ours-server", false, true, false, false}} {
		b.Run(k.name, func(b *testing.B) {
			ts := newTestServer()
			client, _ := newPair(b, k.ourClient, k.ourServer, ts.client())
			ctx := context.Background()
			if k.cancelable {
				ctx = b.Context()
			}
			boot := client.bootstrap(ctx)
			defer boot.Release()
			e := schema.Echo(boot)
			if _, err := echo(ctx, e, "warm-up!"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			created := goroutinesCreated()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cctx, cancel := ctx, context.CancelFunc(nil)
				if k.perCall {
					cctx, cancel = context.WithCancel(ctx)
				}
				f, rel := e.Echo(cctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("12345678") })
				if _, err := f.Struct(); err != nil {
					b.Fatal(err)
				}
				rel()
				if cancel != nil {
					cancel()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(goroutinesCreated()-created)/float64(b.N), "gocreated/op")
		})
	}
	b.Run("raw", func(b *testing.B) {
		x, y := socketPair(b)
		defer x.Close()
		defer y.Close()
		go func() {
			buf := make([]byte, 8)
			for {
				if _, err := io.ReadFull(y, buf); err != nil {
					return
				}
				if _, err := y.Write(buf); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 8)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			x.Write(buf)
			io.ReadFull(x, buf)
		}
	})
}

// goroutinesCreated is the number of goroutines this process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
