package rpcconn

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"capnproto.org/go/capnp/v3"
)

// readFrame reads one message in the standard stream framing, refusing
// more than MaxSegments segments or more than maxSize bytes before
// allocating for them, and sets the read limits on it.
func readFrame(r io.Reader, hdr []byte, l *limits) (*capnp.Message, uint64, error) {
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return nil, 0, err
	}
	nseg := uint64(binary.LittleEndian.Uint32(hdr[:4])) + 1
	if nseg > MaxSegments {
		return nil, 0, protoErr("message has %d segments, more than %d", nseg, MaxSegments)
	}
	hlen := 4 + 4*nseg
	if hlen%8 != 0 {
		hlen += 4
	}
	if _, err := io.ReadFull(r, hdr[4:hlen]); err != nil {
		return nil, 0, unexpectedEOF(err)
	}
	total := hlen
	for i := uint64(0); i < nseg; i++ {
		total += 8 * uint64(binary.LittleEndian.Uint32(hdr[4+4*i:]))
		if total > l.maxMessage {
			return nil, 0, protoErr("message too large: larger than %d bytes", l.maxMessage)
		}
	}
	var msg *capnp.Message
	var err error
	if nseg == 1 {
		// The common case, with fewer allocations than Unmarshal.
		buf := getRecvBuf(int(total - hlen))
		if _, err := io.ReadFull(r, buf.b); err != nil {
			putRecvBuf(buf)
			return nil, 0, unexpectedEOF(err)
		}
		// The message and its arena in one allocation.
		rm := newRecvMsg()
		rm.arena.buf = buf
		rm.arena.ReplaceData(buf.b)
		msg = &rm.msg
		_, err = msg.Reset(&rm.arena)
	} else {
		buf := getRecvBuf(int(total))
		copy(buf.b, hdr[:hlen])
		if _, err := io.ReadFull(r, buf.b[hlen:]); err != nil {
			putRecvBuf(buf)
			return nil, 0, unexpectedEOF(err)
		}
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
func writeFrame(w *bufio.Writer, direct io.Writer, msg *capnp.Message, hdr []byte) error {
	n := msg.NumSegments()
	if n < 1 || n > MaxSegments {
		return fmt.Errorf("rpcconn: outgoing message has %d segments", n)
	}
	binary.LittleEndian.PutUint32(hdr, uint32(n-1))
	hlen := 4 + 4*n
	for i := int64(0); i < n; i++ {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(hdr[4+4*i:], uint32(len(seg.Data())/8))
	}
	if hlen%8 != 0 {
		binary.LittleEndian.PutUint32(hdr[hlen:], 0)
		hlen += 4
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

// appendFrame appends msg in the standard stream framing to dst.
func appendFrame(dst []byte, msg *capnp.Message) ([]byte, error) {
	n := msg.NumSegments()
	if n < 1 || n > MaxSegments {
		return dst, fmt.Errorf("rpcconn: outgoing message has %d segments", n)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n-1))
	for i := int64(0); i < n; i++ {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return dst, err
		}
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(seg.Data())/8))
	}
	if n%2 == 0 {
		dst = binary.LittleEndian.AppendUint32(dst, 0)
	}
	for i := int64(0); i < n; i++ {
		seg, _ := msg.Segment(capnp.SegmentID(i))
		dst = append(dst, seg.Data()...)
	}
	return dst, nil
}

// frameHeaderSize is the buffer readFrame needs for a header.
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
