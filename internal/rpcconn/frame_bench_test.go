package rpcconn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// BenchmarkEcho1MiB measures a 1 MiB echo round trip over a socketpair,
// our connection at both ends, in this process: after the first call,
// each frame is read in one pass into the buffer the previous one left.
func BenchmarkEcho1MiB(b *testing.B) {
	client, _ := newPair(b, true, true, newTestServer().client())
	ctx := context.Background()
	boot := client.bootstrap(ctx)
	defer boot.Release()
	slow := testschema.Slow(boot)
	payload := strings.Repeat("x", 1<<20)
	call := func() {
		f, rel := slow.Echo(ctx, func(p testschema.Slow_echo_Params) error { return p.SetS(payload) })
		defer rel()
		r, err := f.Struct()
		if err != nil {
			b.Fatal(err)
		}
		if got, _ := r.SBytes(); len(got) != len(payload) {
			b.Fatalf("%d bytes back", len(got))
		}
	}
	call()
	b.SetBytes(2 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		call()
	}
}

// BenchmarkReadFrame reads a single-segment frame from memory through a
// 64 KiB bufio.Reader, as the connection does: "first" with a new
// frameReader each time (the first frame of its size on a connection,
// whose buffer grows as it arrives), "again" with the same one.
func BenchmarkReadFrame(b *testing.B) {
	for _, n := range []int{8, 1 << 20, 64<<20 - 64} {
		msg, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
		d, _ := capnp.NewData(seg, make([]byte, n))
		if err := msg.SetRoot(d.ToPtr()); err != nil {
			b.Fatal(err)
		}
		frame, err := msg.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		lim := (&Options{}).limits()
		for _, fresh := range []bool{true, false} {
			name := fmt.Sprintf("%d/again", n)
			if fresh {
				name = fmt.Sprintf("%d/first", n)
			}
			b.Run(name, func(b *testing.B) {
				src := bytes.NewReader(frame)
				br := bufio.NewReaderSize(src, 64<<10)
				fr := newFrameReader(br, &lim)
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					src.Reset(frame)
					br.Reset(src)
					if fresh {
						fr = newFrameReader(br, &lim)
					}
					m, _, err := fr.next()
					if err != nil {
						b.Fatal(err)
					}
					m.Release()
				}
			})
		}
	}
}
