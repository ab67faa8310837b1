package protocol

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"capnproto.org/go/capnp/v3"
)

// timeoutConn's framing follows messages of any number of segments,
// however the stream is cut into reads: it is between messages exactly at
// their boundaries. A lost sync would drop an idle peer.
func TestTimeoutConnFollowsFraming(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var stream []byte
	var ends []int               // offsets where a message ends
	segCounts := map[int64]int{} // messages by number of segments
	for i := 0; i < 200; i++ {
		arena := capnp.MultiSegment(nil)
		msg, seg, err := capnp.NewMessage(arena)
		if err != nil {
			t.Fatal(err)
		}
		// Lists of random sizes spread over 1 to several segments.
		root, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 4})
		if err != nil {
			t.Fatal(err)
		}
		msg.SetRoot(root.ToPtr())
		for p := 0; p < rng.IntN(5); p++ {
			d, err := capnp.NewData(seg, bytes.Repeat([]byte{byte(p)}, rng.IntN(20000)))
			if err != nil {
				t.Fatal(err)
			}
			root.SetPtr(uint16(p%4), d.ToPtr())
		}
		b, err := msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		segCounts[msg.NumSegments()]++
		stream = append(stream, b...)
		ends = append(ends, len(stream))
	}
	isEnd := map[int]bool{}
	for _, e := range ends {
		isEnd[e] = true
	}
	odd, even := 0, 0
	for n, k := range segCounts {
		if n%2 == 0 {
			even += k
		} else if n > 1 {
			odd += k
		}
	}
	if odd == 0 || even == 0 {
		t.Fatalf("messages by segment count: %v; want some with an even and some with an odd count above 1", segCounts)
	}
	for round := 0; round < 20; round++ {
		c := &timeoutConn{}
		for off := 0; off < len(stream); {
			n := min(1+rng.IntN(9000), len(stream)-off)
			if round == 0 {
				n = 1
			}
			c.scan(stream[off : off+n])
			off += n
			if mid := c.midMessage(); mid == isEnd[off] {
				t.Fatalf("round %d: after %d bytes midMessage = %v, message end: %v", round, off, mid, isEnd[off])
			}
		}
		if c.midMessage() {
			t.Fatalf("round %d: mid message at the end of the stream", round)
		}
	}
}
