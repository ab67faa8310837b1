package rpcconn

import (
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// A received message's bytes, handed out without a copy.
//
// A large Text field can become a Go string over the received frame's
// own buffer, rather than a copy of it: the buffer was allocated for
// frames (bufpool.go), the string keeps it alive, and the collector frees
// it with the last string. What a string is made over must never change
// again, so the buffer is then marked shared: it is never poisoned (under
// the race detector), never returned to a pool, and never read into
// again. The frame's next message gets another buffer, so the copy is
// traded for an allocation of the frame's size; both sides of a call
// allocated one anyway (the string), and the buffer is read into at
// once, where the copy read a pooled buffer and wrote fresh memory.
//
// The other way a received message's bytes leave it is as []byte: Data
// parameters are borrowed for the call, and Data results with package
// mp's Borrow, and their holders may write to them. A hostile peer can
// point a Text and a Data field at the same bytes, so a buffer that
// strings share is never viewed as []byte, and one that has been is never
// shared by strings: the second of the two is copied (BorrowBytes and
// TextString say no).
//
// The pools keep what they kept without sharing: the buffer a string
// takes is replaced in its pool by a new one of its size (not zeroed), as
// if it had been given back. So the next frame of the size is read into
// a pooled buffer as before, and the memory the process holds is the
// same (one pooled buffer, and the strings): without the replacement the
// pool held nothing between frames, the collector's goal was lower by
// that much, and the 1 MiB Text round trip ran a third more collections
// (513 -> 689 per 1000 calls), which cost more than the copy saved under
// load.
//
// Nothing else writes into a received message: package mp's decoders
// read, and releasing a message leaves its bytes as they are (gocapnp.go,
// 9).
//
// Memory follows the bytes received: a string shares only a buffer that a
// whole frame filled, and at most twice its own size (a Text that is most
// of its message: a large parameter or result); smaller Text fields, and
// those of messages that hold much else, are copied.

// TextString returns b, the bytes of a Text field of m, as a string over
// m's own buffer, and true, if m is a received message whose buffer may
// become the string's memory (see above); else "", false, and the caller
// copies b. b must be a Text's bytes as capnp.Ptr.TextBytes returns them.
func TextString(m *capnp.Message, b []byte) (string, bool) {
	if len(b) < MinLend {
		return "", false
	}
	buf := receivedBuf(m, b)
	if buf == nil || buf.viewed || 2*len(b) < cap(buf.b) {
		return "", false
	}
	if !buf.shared {
		buf.shared = true
		buf.replace() // once, however many strings share buf
	}
	str := unsafe.String(unsafe.SliceData(b), len(b))
	if testTextShared != nil {
		testTextShared(str)
	}
	return str, true
}

// testTextShared, if set (by tests), sees every string TextString makes.
var testTextShared func(string)

// SetTestTextShared makes f see every string made over a received
// message's buffer (TextString), until restore is called: for tests of
// package mp that its decoder shares rather than copies. Not safe while
// connections are reading.
func SetTestTextShared(f func(string)) (restore func()) {
	old := testTextShared
	testTextShared = f
	return func() { testTextShared = old }
}

// BorrowBytes reports whether b, bytes of m, may be handed out as a []byte
// that aliases m (borrowed Data): not if strings share m's buffer
// (TextString), whose bytes its holder could change. It records the
// view, so that no string shares the buffer later.
func BorrowBytes(m *capnp.Message, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	buf := receivedBuf(m, b)
	if buf == nil {
		return true // not a received buffer of ours: nothing to protect
	}
	if buf.shared {
		return false
	}
	buf.viewed = true
	return true
}

// replace puts a new buffer of b's size in b's pool, for b, which a
// string has taken (see above). b was filled by a whole frame, so the
// pools still hold only what whole frames needed.
func (b *recvBuf) replace() {
	if b.class >= 0 {
		recvPools[b.class].Put(&recvBuf{b: makeNoZero(cap(b.b)), class: b.class, filled: true})
	}
}

// receivedBuf returns the buffer of m, a received message, if b lies
// within it; nil for other messages (built here, released, or not ours).
func receivedBuf(m *capnp.Message, b []byte) *recvBuf {
	if m == nil {
		return nil
	}
	var buf *recvBuf
	switch a := m.Arena.(type) {
	case *recvArena:
		buf = a.buf
	case *recvMultiArena:
		buf = a.buf
	}
	if buf == nil || !buf.filled || !within(b, buf.b) {
		return nil
	}
	return buf
}

// within reports whether b lies within in.
func within(b, in []byte) bool {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(in)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p+uintptr(len(b)) <= lo+uintptr(len(in))
}
