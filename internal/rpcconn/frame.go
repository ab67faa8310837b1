package rpcconn

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"capnproto.org/go/capnp/v3"
)

// A frameReader reads one connection's messages in the standard stream
// framing. Memory follows the bytes the peer sends, not the sizes it
// claims: a frame's buffer starts at a few times what has arrived (about
// minFrameChunk before anything has) and, each time it is full while
// more is claimed, is replaced by one frameGrowth times larger, into
// which its bytes are copied. The sizes are the claim divided by powers
// of frameGrowth, so that the last buffer before the whole frame holds a
// quarter of it. So a peer that claims 64 MiB and sends 8 bytes costs
// about minFrameChunk, one that stops part way at most 5 times what it
// sent (a buffer returns to the pool only once filled: see putRecvBuf),
// and a whole frame has at most a third of its bytes copied once more.
//
// Only the first frame of its size on a connection pays for the growth:
// a frame no larger than the largest one read whole on the connection
// gets its buffer at once and is read in one pass (for the 1 MiB calls
// of a steady stream, the buffer the previous one released to the pool).
// What a peer has made us hold for one whole frame, it may make us hold
// again; never more than that before its bytes arrive.
type frameReader struct {
	r     io.Reader
	br    *bufio.Reader // r, if it is one: what it has buffered has arrived
	lim   *limits
	trust int // the largest buffer a frame filled whole on this connection
	hdr   [frameHeaderSize]byte

	// A frame whose reading errYield interrupted (the goroutine reading
	// gave way: role.go), to go on with at the next call: its header is
	// in hdr and consumed; body holds got bytes of its n.
	pending bool
	nseg    uint64
	hlen    uint64
	total   uint64
	body    *recvBuf
	got     int
}

const (
	// minFrameChunk is the buffer a frame gets before its bytes arrive
	// (all of it for frames up to this size, the common case): the
	// constant cost of a claim, beside the connection's 64 KiB read
	// buffer.
	minFrameChunk = 8 << 10
	// frameGrowth is how many times larger a frame's next buffer is.
	frameGrowth = 4
)

// newFrameReader reads frames from r, within the limits l.
func newFrameReader(r io.Reader, l *limits) *frameReader {
	fr := &frameReader{r: r, lim: l}
	fr.br, _ = r.(*bufio.Reader)
	return fr
}

// next reads one message, refusing more than MaxSegments segments or
// more than the size limit before allocating for them, and sets the read
// limits on it. It returns the frame's size in bytes.
//
// If the reader under the buffer fails with errYield, next returns it
// having lost nothing: the next call goes on where this one stopped.
// (The header is peeked until whole, and only then consumed; the body's
// progress is kept in fr.)
func (fr *frameReader) next() (*capnp.Message, uint64, error) {
	if !fr.pending {
		if err := fr.header(); err != nil {
			return nil, 0, err
		}
		fr.pending = true
		fr.body, fr.got = nil, 0
	}
	var buf *recvBuf
	var err error
	if fr.nseg == 1 {
		buf, err = fr.readBody(nil, int(fr.total-fr.hlen))
	} else {
		buf, err = fr.readBody(fr.hdr[:fr.hlen], int(fr.total))
	}
	if err == errYield {
		return nil, 0, err
	}
	fr.pending = false
	if err != nil {
		return nil, 0, err
	}
	total, l := fr.total, fr.lim
	var msg *capnp.Message
	if fr.nseg == 1 {
		// The common case, with fewer allocations than Unmarshal.
		// The message and its arena in one allocation.
		rm := newRecvMsg()
		rm.arena.buf = buf
		rm.arena.ReplaceData(buf.b)
		msg = &rm.msg
		_, err = msg.Reset(&rm.arena)
	} else {
		msg, err = capnp.Unmarshal(buf.b)
		if err == nil {
			msg.Arena = &recvMultiArena{Arena: msg.Arena, buf: buf}
		} else {
			putRecvBuf(buf)
		}
	}
	if err != nil {
		return nil, 0, protoErr("bad frame: %v", err)
	}
	msg.TraverseLimit = l.traverse
	msg.DepthLimit = l.depth
	msg.ResetReadLimit(l.traverse)
	return msg, total, nil
}

// header reads a frame's header into fr.hdr and sets fr.nseg, fr.hlen and
// fr.total. Through a bufio.Reader it consumes nothing until the header
// is whole, so that an error leaves the bytes read for the next call.
func (fr *frameReader) header() error {
	hdr, l := fr.hdr[:], fr.lim
	if fr.br != nil {
		b, err := fr.br.Peek(4)
		if err != nil {
			if len(b) > 0 {
				err = unexpectedEOF(err)
			}
			return err
		}
		copy(hdr, b)
	} else if _, err := io.ReadFull(fr.r, hdr[:4]); err != nil {
		return err
	}
	nseg := uint64(binary.LittleEndian.Uint32(hdr[:4])) + 1
	if nseg > MaxSegments {
		return protoErr("message has %d segments, more than %d", nseg, MaxSegments)
	}
	hlen := 4 + 4*nseg
	if hlen%8 != 0 {
		hlen += 4
	}
	if fr.br != nil {
		b, err := fr.br.Peek(int(hlen))
		if err != nil {
			return unexpectedEOF(err)
		}
		copy(hdr, b)
		fr.br.Discard(int(hlen))
	} else if _, err := io.ReadFull(fr.r, hdr[4:hlen]); err != nil {
		return unexpectedEOF(err)
	}
	total := hlen
	for i := uint64(0); i < nseg; i++ {
		total += 8 * uint64(binary.LittleEndian.Uint32(hdr[4+4*i:]))
		if total > l.maxMessage {
			return protoErr("message too large: larger than %d bytes", l.maxMessage)
		}
	}
	fr.nseg, fr.hlen, fr.total = nseg, hlen, total
	return nil
}

// readBody reads n bytes of a frame, prefix (the header, for a frame of
// several segments) in hand and the rest from the reader, into a pooled
// buffer that grows as they arrive (see frameReader). After errYield,
// the next call goes on with fr.body.
func (fr *frameReader) readBody(prefix []byte, n int) (*recvBuf, error) {
	buf, got := fr.body, fr.got
	fr.body, fr.got = nil, 0
	if buf == nil {
		size := n
		if n > fr.trust {
			arrived := len(prefix)
			if fr.br != nil {
				arrived += fr.br.Buffered()
			}
			size = chunkSize(n, max(minFrameChunk, frameGrowth*arrived))
		}
		buf = getRecvBuf(size)
		got = copy(buf.b, prefix)
	}
	for {
		k, err := io.ReadFull(fr.r, buf.b[got:])
		got += k
		if err == errYield {
			fr.body, fr.got = buf, got
			return nil, err
		}
		if err != nil {
			putRecvBuf(buf)
			return nil, unexpectedEOF(err)
		}
		buf.filled = true
		if got == n {
			break
		}
		// Every byte of buf has arrived, and more is claimed.
		next := getRecvBuf(chunkSize(n, frameGrowth*got))
		copy(next.b, buf.b[:got])
		putRecvBuf(buf)
		buf = next
	}
	fr.trust = max(fr.trust, n)
	return buf, nil
}

// chunkSize is the size of the next buffer for a frame of n bytes, given
// the size that the bytes received allow: n divided by frameGrowth until
// within that size (give or take a quarter, so that a frame just larger
// than a step is not copied once more for its last few bytes).
func chunkSize(n, allowed int) int {
	s := n
	for s > allowed+allowed/4 {
		s = (s + frameGrowth - 1) / frameGrowth
	}
	return s
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFrame writes msg in the standard stream framing to w, which
// buffers what it writes to direct; hdr is scratch space of
// frameHeaderSize bytes or more. (capnp.Encoder allocates on every
// message.) A segment as large as w's buffer goes to direct itself, after
// what w holds: through w, bufio would first copy a buffer's worth of it.
// Lent segments (ext) are the caller's to write, after it.
func writeFrame(w *bufio.Writer, direct io.Writer, msg *capnp.Message, ext *outExt, hdr []byte) error {
	n, hlen, err := frameHeader(hdr, msg, ext)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr[:hlen]); err != nil {
		return err
	}
	for i := int64(0); i < n; i++ {
		seg, _ := msg.Segment(capnp.SegmentID(i))
		if err := writeSegment(w, direct, seg.Data()); err != nil {
			return err
		}
	}
	return nil
}

// frameHeader writes the frame header of msg and ext into hdr and
// returns msg's own segment count and the header's length.
func frameHeader(hdr []byte, msg *capnp.Message, ext *outExt) (int64, int, error) {
	n := msg.NumSegments()
	total := n
	if ext != nil {
		total += int64(len(ext.segs))
	}
	if n < 1 || total > MaxSegments {
		return 0, 0, fmt.Errorf("rpcconn: outgoing message has %d segments", total)
	}
	binary.LittleEndian.PutUint32(hdr, uint32(total-1))
	for i := int64(0); i < n; i++ {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return 0, 0, err
		}
		binary.LittleEndian.PutUint32(hdr[4+4*i:], uint32(len(seg.Data())/8))
	}
	if ext != nil {
		for i := range ext.segs {
			binary.LittleEndian.PutUint32(hdr[4+4*(n+int64(i)):], ext.segs[i].words())
		}
	}
	hlen := int(4 + 4*total)
	if hlen%8 != 0 {
		binary.LittleEndian.PutUint32(hdr[hlen:], 0)
		hlen += 4
	}
	return n, hlen, nil
}

// writeSegment writes b through w, or, from w's size up, to direct once
// w has written what it holds (see writeFrame).
func writeSegment(w *bufio.Writer, direct io.Writer, b []byte) error {
	if len(b) < w.Size() {
		_, err := w.Write(b)
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := direct.Write(b)
	return err
}

// appendFrame appends msg, and ext's lent segments if any, in the
// standard stream framing to dst.
func appendFrame(dst []byte, msg *capnp.Message, ext *outExt) ([]byte, error) {
	n := msg.NumSegments()
	total := n
	if ext != nil {
		total += int64(len(ext.segs))
	}
	if n < 1 || total > MaxSegments {
		return dst, fmt.Errorf("rpcconn: outgoing message has %d segments", total)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(total-1))
	for i := int64(0); i < n; i++ {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return dst, err
		}
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(seg.Data())/8))
	}
	if ext != nil {
		for i := range ext.segs {
			dst = binary.LittleEndian.AppendUint32(dst, ext.segs[i].words())
		}
	}
	if total%2 == 0 {
		dst = binary.LittleEndian.AppendUint32(dst, 0)
	}
	for i := int64(0); i < n; i++ {
		seg, _ := msg.Segment(capnp.SegmentID(i))
		dst = append(dst, seg.Data()...)
	}
	if ext != nil {
		ext.mu.Lock()
		ext.writing = true
		for _, s := range ext.segs {
			dst = append(dst, s.b...)
			dst = append(dst, zeroPad[:s.pad]...)
		}
		ext.mu.Unlock()
	}
	return dst, nil
}

// frameHeaderSize is the largest frame header: a segment count and
// MaxSegments sizes, padded to a word.
const frameHeaderSize = 8 + 4*MaxSegments

func msgSize(m *capnp.Message) uint64 {
	n, err := m.TotalSize()
	if err != nil {
		return 0
	}
	return n
}

// heldSize is the memory a queued message holds: its segments' capacity,
// which a pooled buffer can make far larger than the bytes in use (a
// 60-byte Return may hold a buffer of kilobytes), plus the message
// itself. The outgoing queue's limit counts this, not msgSize: counting
// bytes in use let a peer that never reads make the queue hold gigabytes
// of buffers before the limit was reached.
func heldSize(m *capnp.Message) uint64 {
	const overhead = 256 // the Message, its arena and the queue entry
	n := uint64(overhead)
	for i := int64(0); i < m.NumSegments(); i++ {
		seg, err := m.Segment(capnp.SegmentID(i))
		if err != nil {
			break
		}
		n += uint64(cap(seg.Data()))
	}
	return n
}
