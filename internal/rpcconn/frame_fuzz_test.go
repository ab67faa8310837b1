package rpcconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// fuzzFrameMax is the message size limit FuzzFrame reads with: small, so
// that inputs can cross it.
const fuzzFrameMax = 1 << 16

// frameSeeds are framings worth mutating: valid messages of one and
// several segments, and each way a header can be refused.
func frameSeeds() [][]byte {
	multi := func() []byte {
		arena := capnp.MultiSegment(nil)
		msg, seg, _ := capnp.NewMessage(arena)
		m, _ := rpccp.NewRootMessage(seg)
		b, _ := m.NewBootstrap()
		b.SetQuestionId(3)
		for range 3 {
			// Each text lands in a segment of its own once the first
			// is full.
			_, _ = capnp.NewText(seg, strings.Repeat("x", 2000))
		}
		out, err := msg.Marshal()
		if err != nil {
			panic(err)
		}
		return out
	}()
	header := rpcmsg.Header
	return [][]byte{
		nullBodyReturn,
		buildFrame(rpcmsg.Bootstrap(0)),
		validSession(),
		multi,
		header(0),                        // one empty segment
		header(1 << 27),                  // claims 1 GiB
		header(fuzzFrameMax/8 + 1),       // one word over the limit
		header(make([]uint32, 513)...),   // 513 segments
		header(make([]uint32, 512)...),   // 512 empty segments
		{0xff, 0xff, 0xff, 0xff},         // 2^32 segments
		append(header(4), 1, 2, 3, 4),    // truncated
		[]byte("GET / HTTP/1.1\r\n\r\n"), // not Cap'n Proto
		append(header(0, 2), make([]byte, 16)...),
		append(header(fuzzFrameMax/8-2), 1, 2, 3, 4, 5, 6, 7, 8),       // claims the limit, sends 8 bytes
		append(header(1000, 2000, 4000, 1000), 1, 2, 3, 4, 5, 6, 7, 8), // the same in segments
	}
}

// FuzzFrame feeds arbitrary bytes to a frameReader. It must never panic;
// it must refuse more than MaxSegments segments or more than the size
// limit having read no more than the header and allocated nothing of the
// size claimed; on a frame cut short it must allocate for the bytes sent,
// not the size claimed; and on a frame within the limits it must agree
// with capnp.Unmarshal, segment for segment.
func FuzzFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	l := (&Options{MaxMessageSize: fuzzFrameMax}).limits()
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		fr := newFrameReader(r, &l)
		nseg, hlen, total, complete := parseHeader(data)

		var before, after runtime.MemStats
		oversize := complete && nseg <= MaxSegments && total > fuzzFrameMax
		// A claim far beyond the bytes sent may cost a few times those
		// bytes, and minFrameChunk, but not the claim.
		allowance := 16*uint64(len(data)) + 4*minFrameChunk
		overclaim := complete && nseg <= MaxSegments && !oversize && total > allowance
		if oversize || overclaim {
			runtime.ReadMemStats(&before)
		}
		msg, size, err := fr.next()
		read := uint64(len(data) - r.Len())
		if oversize || overclaim {
			runtime.ReadMemStats(&after)
		}

		switch {
		case len(data) >= 4 && nseg > MaxSegments:
			var pe *ProtocolError
			if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "segments") {
				t.Fatalf("%d segments: err = %v, want a refusal", nseg, err)
			}
			if read != 4 {
				t.Fatalf("%d segments: read %d bytes before refusing, want 4", nseg, read)
			}
		case oversize:
			var pe *ProtocolError
			if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "too large") {
				t.Fatalf("%d bytes claimed: err = %v, want a refusal", total, err)
			}
			if read > hlen {
				t.Fatalf("%d bytes claimed: read %d bytes before refusing, more than the %d of the header", total, read, hlen)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew >= fuzzFrameMax {
				t.Fatalf("%d bytes claimed: allocated %d bytes before refusing", total, grew)
			}
		case !complete || uint64(len(data)) < total:
			if err == nil {
				t.Fatalf("incomplete frame (%d of %d bytes) read as a message", len(data), total)
			}
			if len(data) > 0 && errors.Is(err, io.EOF) {
				t.Fatalf("a partial frame gave io.EOF, which means a clean end")
			}
			if grew := after.TotalAlloc - before.TotalAlloc; overclaim && grew >= allowance {
				t.Fatalf("%d bytes claimed, %d sent: allocated %d bytes", total, len(data), grew)
			}
		default:
			want, werr := capnp.Unmarshal(data[:total])
			if (err == nil) != (werr == nil) {
				t.Fatalf("frameReader: %v; capnp.Unmarshal: %v", err, werr)
			}
			if err != nil {
				return
			}
			if size != total || read != total {
				t.Fatalf("frame of %d bytes: frameReader reported %d and read %d", total, size, read)
			}
			if msg.NumSegments() != want.NumSegments() {
				t.Fatalf("frameReader: %d segments; capnp.Unmarshal: %d", msg.NumSegments(), want.NumSegments())
			}
			for i := int64(0); i < msg.NumSegments(); i++ {
				a, aerr := msg.Segment(capnp.SegmentID(i))
				b, berr := want.Segment(capnp.SegmentID(i))
				if aerr != nil || berr != nil || !bytes.Equal(a.Data(), b.Data()) {
					t.Fatalf("segment %d differs (%v, %v)", i, aerr, berr)
				}
			}
			if msg.TraverseLimit != l.traverse || msg.DepthLimit != l.depth {
				t.Fatalf("limits not set: traverse %d, depth %d", msg.TraverseLimit, msg.DepthLimit)
			}
		}
	})
}

// parseHeader reads a stream frame header independently of frameReader:
// the segment count, the header's length, the frame's total length, and
// whether data holds the whole header (the count alone when it is over
// MaxSegments).
func parseHeader(data []byte) (nseg, hlen, total uint64, complete bool) {
	if len(data) < 4 {
		return 0, 0, 0, false
	}
	nseg = uint64(binary.LittleEndian.Uint32(data)) + 1
	if nseg > MaxSegments {
		return nseg, 4, 0, true
	}
	hlen = 4 + 4*nseg
	hlen += hlen % 8
	if uint64(len(data)) < hlen {
		return nseg, hlen, 0, false
	}
	total = hlen
	for i := uint64(0); i < nseg; i++ {
		total += 8 * uint64(binary.LittleEndian.Uint32(data[4+4*i:]))
	}
	return nseg, hlen, total, true
}
