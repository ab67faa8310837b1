package rpcconn

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exp/bufferpool"
)

// Lent segments: a large Data or Text field of an outgoing message is
// sent as a segment of its own, the bytes the program handed over, rather
// than copied into the message (go-capnp would zero the room first and
// then copy). The message's own segment holds a double-far pointer in the
// field's slot, and a two-word landing pad that points to the start of the
// next segment with the list's size; the frame's header lists that segment
// after the message's, and the writer writes the bytes from where they
// are. Receivers need nothing special: far pointers and frames of several
// segments are ordinary Cap'n Proto.
//
// The bytes are read by the writer, after the call that queued them has
// returned to its caller. Who may change them, and when:
//
//   - a Go string's bytes never change: sent as they are, for as long as
//     the writer needs them (the segment keeps the string alive);
//   - a received message's bytes (a server method returning part of its
//     parameters) are kept, with the message, until the writer is done;
//   - a caller's []byte is lent for a synchronous call only: when Send
//     returns, the writer is done with it, or what it has left to write
//     has been copied (the call ended first: canceled, or the
//     connection ended), so that the caller may change its bytes as
//     soon as Send returns. The writer writes lent bytes with
//     non-blocking write(2)s of at most lendChunk, each under the
//     segment's lock (writeLent), so the copy waits for one system call
//     at most. Only connections on a file descriptor lend a caller's
//     bytes (others copy them).

// MinLend is the size from which a Data or Text field is lent rather than
// copied into its message: below it a copy costs less than a segment of
// its own (its frame is read whole, in one pass, by the receiver) and the
// writer copies it through its buffer anyway.
const MinLend = 64 << 10

// lendChunk is the most the writer writes of lent bytes at a time.
const lendChunk = 256 << 10

// maxLendElems is the most elements a list pointer can count (29 bits).
const maxLendElems = 1<<29 - 1

// An outExt is what a queued message sends beyond its own segment.
type outExt struct {
	mu   sync.Mutex
	segs []extSeg // frame segments 1.. in order
	size uint64   // their bytes, padding included
	// mutable: a segment is a caller's []byte, which detach copies.
	mutable bool
	// writing: the writer has started on the segments; done: it is done
	// with them (written, or the message dropped).
	writing, done bool
	// onDone runs once the writer is done with the segments: it lets go
	// of what kept their bytes (a received message).
	onDone func()
	// owned are buffers of bufferpool.Default holding copies, which go
	// back to it once the writer is done with them.
	owned [][]byte
}

// An extSeg is one lent segment: b, then pad zero bytes (to a word; a
// Text's NUL is among them).
type extSeg struct {
	b       []byte
	pad     int
	mutable bool
}

// words is the segment's size in words.
func (s *extSeg) words() uint32 { return uint32((len(s.b) + s.pad) / 8) }

var zeroPad [8]byte

// finish marks the writer done with e and runs onDone. It runs once per
// queued message (dropOut).
func (e *outExt) finish() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.done = true
	e.segs = nil
	f := e.onDone
	e.onDone = nil
	owned := e.owned
	e.owned = nil
	e.mu.Unlock()
	for _, b := range owned {
		recycleSendBuf(b)
	}
	if f != nil {
		f()
	}
}

// detach makes sure that the writer no longer reads the caller's bytes
// once it returns: if it is not done with them, what it has still to
// write is copied (after the piece it is writing, if any). The caller of
// a synchronous call runs it before returning to its caller.
func (e *outExt) detach() {
	if e == nil || !e.mutable {
		return
	}
	e.mu.Lock()
	if !e.done {
		for i := range e.segs {
			if s := &e.segs[i]; s.mutable {
				s.b = append([]byte(nil), s.b...)
				s.mutable = false
			}
		}
	}
	e.mutable = false
	e.mu.Unlock()
}

// writeExt writes ext's segments, each followed by its padding, after
// the message's own (writeFrame). A caller's bytes (mutable) are written
// with non-blocking write(2)s, each under ext's lock, so that detach
// waits for one system call at most, not for a peer that reads slowly;
// between them the writer waits for the socket outside the lock. Other
// segments are written as writeFrame writes the message's own.
func (c *Conn) writeExt(w *bufio.Writer, ext *outExt) error {
	ext.mu.Lock()
	ext.writing = true
	k := len(ext.segs)
	ext.mu.Unlock()
	for i := 0; i < k; i++ {
		ext.mu.Lock()
		s := ext.segs[i]
		ext.mu.Unlock()
		var err error
		if s.mutable {
			err = c.writeLent(w, ext, i)
		} else {
			if testSegmentWrite != nil {
				testSegmentWrite(s.b)
			}
			err = writeSegment(w, c.rwc, s.b)
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(zeroPad[:s.pad]); err != nil {
			return err
		}
	}
	return nil
}

// testLentWrite, if set (by tests), sees every piece of lent bytes
// handed to write(2).
var testLentWrite func([]byte)

// SetTestLentWrite makes f see every piece of a caller's lent bytes as it
// is handed to write(2), until restore is called: for tests (of this
// package and package mp) that the bytes are written from where they
// are. Not safe while connections are writing.
func SetTestLentWrite(f func([]byte)) (restore func()) {
	old := testLentWrite
	testLentWrite = f
	return func() { testLentWrite = old }
}

// testSegmentWrite, if set (by tests), sees every lent segment that is
// not a caller's []byte (a string's bytes, a received message's) as it
// is handed to writeSegment.
var testSegmentWrite func([]byte)

// SetTestSegmentWrite makes f see, until restore is called, every lent
// segment that is not a caller's []byte (a Text's string, Data sent from
// a call's parameters, Data copied into a segment of its own) as it is
// written: for tests of package mp that these are written from where
// they are. Not safe while connections are writing.
func SetTestSegmentWrite(f func([]byte)) (restore func()) {
	old := testSegmentWrite
	testSegmentWrite = f
	return func() { testSegmentWrite = old }
}

// writeLent writes lent segment i of ext straight from the caller's
// bytes (or from the copy detach made of them meanwhile).
func (c *Conn) writeLent(w *bufio.Writer, ext *outExt, i int) error {
	if err := w.Flush(); err != nil {
		return err
	}
	off := 0
	for {
		// A transport with a write timeout (package protocol's) arms
		// it in Write: arm it for the wait below, as its Write does
		// before every write that makes progress.
		if _, err := c.rwc.Write(nil); err != nil {
			return err
		}
		var werr error
		done := false
		err := c.raw.Write(func(fd uintptr) bool {
			ext.mu.Lock()
			b := ext.segs[i].b
			if off >= len(b) {
				ext.mu.Unlock()
				done = true
				return true
			}
			p := b[off:min(off+lendChunk, len(b))]
			if testLentWrite != nil {
				testLentWrite(p)
			}
			n, err := syscall.Write(int(fd), p)
			ext.mu.Unlock()
			switch {
			case err == syscall.EAGAIN || err == syscall.EINTR:
				return false
			case err != nil:
				werr = err
			case n > 0:
				off += n
				done = off >= len(b)
			}
			return true
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return fmt.Errorf("rpcconn: write: %w", err)
		}
		if done {
			return nil
		}
	}
}

var errNoLend = errors.New("rpcconn: field cannot be lent")

// lendField points pointer field i of s, a struct of msg's only segment,
// to b as the next lent segment of ext: a Data, or a Text if text (b
// without its NUL). The field must not be set yet (the slot is
// overwritten).
func lendField(msg *capnp.Message, ext *outExt, s capnp.Struct, i uint16, b []byte, text, mutable bool) error {
	seg := s.Segment()
	n := len(b)
	if text {
		n++
	}
	if !structLayoutOK || seg == nil || seg.Message() != msg || msg.NumSegments() != 1 ||
		i >= s.Size().PointerCount || n > maxLendElems || len(ext.segs)+2 > MaxSegments {
		return errNoLend
	}
	slot := structOff(s) + uint32(s.Size().DataSize) + 8*uint32(i)
	padOff := uint32(len(seg.Data()))
	pad, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 16})
	if err != nil {
		return err
	}
	if structOff(pad) != padOff || pad.Segment() != seg || int(slot)+8 > len(seg.Data()) {
		return errNoLend
	}
	id := uint64(len(ext.segs) + 1)
	// The landing pad: a far pointer to word 0 of segment id, then the
	// tag, a list pointer of n bytes with offset 0.
	pad.SetUint64(0, 2|id<<32)
	pad.SetUint64(8, 1|2<<32|uint64(n)<<35)
	// The field: a double-far pointer to the landing pad, in segment 0.
	binary.LittleEndian.PutUint64(seg.Data()[slot:], 6|uint64(padOff))
	padded := (n + 7) &^ 7
	ext.segs = append(ext.segs, extSeg{b: b, pad: padded - len(b), mutable: mutable})
	ext.size += uint64(padded)
	if mutable {
		ext.mutable = true
	}
	return nil
}

// stringBytes returns v's bytes, which must never be written to.
func stringBytes(v string) []byte { return unsafe.Slice(unsafe.StringData(v), len(v)) }

// Lend sets pointer field i of s, a struct of the call's parameters, to
// b as Data, lent (see MinLend): the call reads b until Send returns. It
// reports false, having done nothing, if b is too small to be worth it or
// the field cannot be lent; the caller then copies b into the message as
// usual. Only for a synchronous call (Send); not for a stream call.
func (dc *Call) Lend(s capnp.Struct, i uint16, b []byte) bool {
	if dc.stream || dc.msg == nil || len(b) < MinLend || dc.c.raw == nil {
		return false
	}
	return dc.lend(s, i, b, false, true)
}

// LendText sets pointer field i of s to v as Text, without copying it, if
// it is large enough to be worth it (MinLend), and reports whether it did.
// A string never changes: any call may send one so, stream calls too.
func (dc *Call) LendText(s capnp.Struct, i uint16, v string) bool {
	if dc.msg == nil || len(v) < MinLend {
		return false
	}
	return dc.lend(s, i, stringBytes(v), true, false)
}

// CopyData sets pointer field i of s, a struct of the call's parameters,
// to a copy of b as Data, in a segment of its own, if b is large enough
// (MinLend), and reports whether it did. It costs one pass over b, where
// copying into the message costs two (go-capnp zeroes the room first) and
// may grow the message's buffer, copying what it held.
func (dc *Call) CopyData(s capnp.Struct, i uint16, b []byte) bool {
	if dc.msg == nil || len(b) < MinLend {
		return false
	}
	if dc.ext == nil {
		dc.ext = new(outExt)
	}
	return copyField(dc.msg, dc.ext, s, i, b)
}

// CopyData is Call.CopyData for a struct of the results.
func (a *answer) CopyData(s capnp.Struct, i uint16, b []byte) bool {
	if a.ret == nil || len(b) < MinLend {
		return false
	}
	if a.ext == nil {
		a.ext = new(outExt)
	}
	return copyField(a.ret, a.ext, s, i, b)
}

// copyField is lendField for a copy of b in a buffer of
// bufferpool.Default, which ext gives back once written.
func copyField(msg *capnp.Message, ext *outExt, s capnp.Struct, i uint16, b []byte) bool {
	buf := bufferpool.Default.Get(len(b))
	copy(buf, b)
	if lendField(msg, ext, s, i, buf, false, false) != nil {
		recycleSendBuf(buf)
		return false
	}
	ext.owned = append(ext.owned, buf)
	return true
}

func (dc *Call) lend(s capnp.Struct, i uint16, b []byte, text, mutable bool) bool {
	if dc.ext == nil {
		dc.ext = new(outExt)
	}
	return lendField(dc.msg, dc.ext, s, i, b, text, mutable) == nil
}

// LendText sets pointer field i of s, a struct of the results, to v as
// Text without copying it, if it is large enough to be worth it, and
// reports whether it did.
func (a *answer) LendText(s capnp.Struct, i uint16, v string) bool {
	if a.ret == nil || len(v) < MinLend {
		return false
	}
	return a.lend(s, i, stringBytes(v), true)
}

// LendArgs sets pointer field i of s, a struct of the results, to b as
// Data without copying it, if b lies within the call's parameters (a
// method returning what it was given, or part of it) and is large enough
// to be worth it; the parameters are then kept until the Return is
// written. It reports whether it did.
func (a *answer) LendArgs(s capnp.Struct, i uint16, b []byte) bool {
	if a.ret == nil || len(b) < MinLend {
		return false
	}
	args := a.args.Load()
	if args == nil || !withinMessage(args, b) {
		return false
	}
	if !a.lend(s, i, b, false) {
		return false
	}
	a.keepArgs = true
	return true
}

func (a *answer) lend(s capnp.Struct, i uint16, b []byte, text bool) bool {
	if a.ext == nil {
		a.ext = new(outExt)
	}
	return lendField(a.ret, a.ext, s, i, b, text, false) == nil
}

// withinMessage reports whether b lies within one of msg's segments.
func withinMessage(msg *capnp.Message, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for k := int64(0); k < msg.NumSegments(); k++ {
		seg, err := msg.Segment(capnp.SegmentID(k))
		if err != nil {
			return false
		}
		d := seg.Data()
		if len(d) == 0 {
			continue
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		if p >= start && p-start+uintptr(len(b)) <= uintptr(len(d)) {
			return true
		}
	}
	return false
}

// sendBuffer is the send buffer (SO_SNDBUF) a connection asks of a unix
// socket: room for a large message in one write(2). With Linux's default
// (208 KiB) a 1 MiB message goes out in five or more writes, each
// waiting for the peer to read (a wake-up of the writer through the
// poller, and of the reader on the other side, per piece); with this it
// goes out in one, and the peer reads while the writer goes on. The
// kernel caps it at net.core.wmem_max (and counts it twice); the memory
// is the kernel's, taken only while the peer has not read what was
// written. Zero leaves the system's default (tests that fill the socket
// to measure what a peer that never reads costs set it so).
var sendBuffer atomic.Int64

func init() { sendBuffer.Store(2 << 20) }

// raiseSendBuffer raises the send buffer of a unix socket to sendBuffer.
// TCP's is left alone: setting it turns off the kernel's own sizing.
func raiseSendBuffer(raw syscall.RawConn) {
	want := int(sendBuffer.Load())
	if want <= 0 {
		return
	}
	raw.Control(func(fd uintptr) {
		if d, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN); err != nil || d != syscall.AF_UNIX {
			return
		}
		if n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF); err == nil && n < want {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, want)
		}
	})
}
