package mp_test

import (
	"context"
	"testing"

	"github.com/gomultiprocess/multiprocess/mp"
)

// BenchmarkEcho8B is one 8-byte echo round trip through a generated proxy
// and server, both ends in this process on a socketpair.
func BenchmarkEcho8B(b *testing.B) {
	ctx := context.Background()
	p := newPairB(b)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer mp.Release(e)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Echo(ctx, "12345678"); err != nil {
			b.Fatal(err)
		}
	}
}
