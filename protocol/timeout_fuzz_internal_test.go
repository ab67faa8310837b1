package protocol

import (
	"encoding/binary"
	"testing"
)

// FuzzTimeoutFraming feeds arbitrary bytes, cut into reads of chunk
// bytes, through timeoutConn's framing and checks after every read that
// it is between messages exactly where an independent reading of the
// stream framing puts a message boundary (at any segment count, since the
// limit on segments is the RPC connection's to enforce). It must never
// panic.
func FuzzTimeoutFraming(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, uint8(3))                                                 // an empty message
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}, uint8(5)) // 24 bytes
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}, uint8(1))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 8}, uint8(8)) // claims 1 GiB
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, uint8(2))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		boundary := frameBoundaries(data)
		c := &timeoutConn{}
		step := int(chunk%32) + 1
		for off := 0; off < len(data); off += step {
			end := min(off+step, len(data))
			c.scan(data[off:end])
			if got, want := c.midMessage(), !boundary[end]; got != want {
				t.Fatalf("after %d bytes (reads of %d): midMessage = %v, want %v", end, step, got, want)
			}
		}
	})
}

// frameBoundaries returns the offsets in data at which a message of the
// stream framing ends.
func frameBoundaries(data []byte) map[int]bool {
	ends := map[int]bool{0: true}
	at := uint64(0)
	n := uint64(len(data))
	for at+4 <= n {
		nseg := uint64(binary.LittleEndian.Uint32(data[at:])) + 1
		hlen := 4 + 4*nseg
		hlen += hlen % 8
		if at+hlen > n {
			break
		}
		total := hlen
		for i := uint64(0); i < nseg; i++ {
			total += 8 * uint64(binary.LittleEndian.Uint32(data[at+4+4*i:]))
		}
		if at+total > n {
			break
		}
		at += total
		ends[int(at)] = true
	}
	return ends
}
