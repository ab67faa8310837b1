package rpcconn

import (
	"math/bits"
	"strings"
	"sync"
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// Received messages are read into pooled buffers: a fresh buffer for each
// message costs an allocation, and for large messages (a 1 MiB call) the
// zeroing, page faults and garbage collection of fresh memory cost more
// than reading it. A buffer goes back to its pool only when the message's
// arena is released (Message.Release, which the owner of a received
// message calls once nothing reads it any more: the reader for messages
// it handles itself, releaseArgs for a call's parameters, the caller's
// ReleaseFunc for a Return's results). The arena's segment forgets the
// buffer on release, so a Struct read from the message after its release
// reads nothing rather than the next message. Under the race detector a
// released buffer is overwritten at once, so that any read of it after
// its release is a race the detector reports (and reads garbage).
//
// Received buffers need no zeroing: a segment is exactly the bytes read
// into it.
//
// A buffer goes back to its pool only if a frame's bytes filled it at
// some time (frameReader hands out buffers as bytes arrive): a burst of
// peers that claim large frames and stop short leaves nothing in the
// pools, and what the pools keep is memory that whole frames needed
// (sync.Pool lets it go after two garbage collections without use).

const (
	minBufShift = 8  // smallest pooled buffer: 256 bytes
	fineShift   = 16 // above 64 KiB, four size classes per doubling
	maxBufShift = 26 // largest pooled buffer: 64 MiB; larger are not pooled
	numClasses  = (fineShift - minBufShift + 1) + 4*(maxBufShift-fineShift)
)

// A recvBuf is a pooled buffer; class is its pool, -1 for none. Its
// capacity is at least its class's size.
type recvBuf struct {
	b      []byte
	class  int
	filled bool // a frame's bytes filled b once (not only the ones now)

	// Who reads b beside the message it holds (sharing.go); set by the
	// goroutine decoding the message, before the message is released.
	// shared: strings were made over b's bytes (TextString), so b must
	// never change again: it is never poisoned nor pooled, and becomes
	// the strings' memory. viewed: []byte slices of it were handed to
	// code that may write to them (BorrowBytes). Never both.
	shared, viewed bool
}

var recvPools [numClasses]sync.Pool

// bufClass returns the size class for n bytes and that class's size, or
// -1 and n if n is too large to pool.
func bufClass(n int) (int, int) {
	if n <= 1<<minBufShift {
		return 0, 1 << minBufShift
	}
	k := bits.Len(uint(n - 1)) // 1<<k >= n
	if k <= fineShift {
		return k - minBufShift, 1 << k
	}
	if k > maxBufShift {
		return -1, n
	}
	base := 1 << (k - 1)
	step := base / 4
	q := (n - base + step - 1) / step // 1..4
	return fineShift - minBufShift + 4*(k-1-fineShift) + q, base + q*step
}

// exactFrom is the size from which a buffer the pools cannot supply is
// allocated at the frame's size (rounded up to the heap's 8 KiB pages)
// rather than its class's, and goes to the class below when released.
// The class sizes round up by as much as a quarter, which for a buffer
// that becomes a string's (TextString) is memory held, collected and
// faulted in again for nothing.
const exactFrom = 64 << 10

// getRecvBuf returns a buffer of n bytes, not zeroed.
func getRecvBuf(n int) *recvBuf {
	class, size := bufClass(n)
	if class < 0 {
		return &recvBuf{b: make([]byte, n), class: -1}
	}
	if b, ok := recvPools[class].Get().(*recvBuf); ok {
		b.b = b.b[:n]
		return b
	}
	if n < exactFrom {
		return &recvBuf{b: make([]byte, n, size), class: class}
	}
	// The class below holds the buffers allocated at frame sizes within
	// this class: the one a frame of this size released, usually, but
	// it may hold smaller ones too (frames of other sizes), which go
	// back.
	var small [floorTries]*recvBuf
	var found *recvBuf
	for i := range small {
		b, ok := recvPools[class-1].Get().(*recvBuf)
		if !ok {
			break
		}
		if cap(b.b) >= n {
			found = b
			break
		}
		small[i] = b
	}
	for _, b := range small {
		if b != nil {
			recvPools[class-1].Put(b)
		}
	}
	if found != nil {
		found.b = found.b[:n]
		return found
	}
	c := (n + pageSize - 1) &^ (pageSize - 1)
	if c >= size {
		return &recvBuf{b: makeNoZero(size)[:n], class: class}
	}
	return &recvBuf{b: makeNoZero(c)[:n], class: class - 1}
}

// floorTries is how many buffers of the class below getRecvBuf looks at
// for one large enough.
const floorTries = 3

// pageSize is the Go heap's page: large allocations are made of them.
const pageSize = 8 << 10

// makeNoZero returns a new slice of n bytes that the runtime has not
// zeroed, for buffers that frames are read into: a received frame's
// bytes are exactly those read (see above), so zeroing them first is a
// pass over memory for nothing, and for a buffer that becomes a string's
// (TextString), one per large Text received. make zeroes memory the heap
// used before; the runtime's own allocation without zeroing is reached
// through strings.Builder.Grow, whose buffer this takes over: the
// Builder and the one-byte string that gives its address are dropped at
// once, so nothing else ever refers to these bytes. The runtime has used
// this allocation for its own buffers since Go 1.21 (bytealg.MakeNoZero);
// a Builder that zeroed would only cost the pass again.
func makeNoZero(n int) []byte {
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(0)
	return unsafe.Slice(unsafe.StringData(sb.String()), n)
}

// putRecvBuf puts b back in its pool if it was ever filled and no string
// shares it, and else leaves it to the collector.
func putRecvBuf(b *recvBuf) {
	if b.shared {
		return // the strings' memory now
	}
	if raceEnabled {
		poison(b.b[:cap(b.b)])
	}
	if b.class >= 0 && b.filled {
		b.viewed = false // the views ended with the message's release
		recvPools[b.class].Put(b)
	}
}

func poison(b []byte) {
	for i := range b {
		b[i] = 0xa5
	}
}

// recvArena is the arena of a received single-segment message: its
// buffer returns to the pool when the message is released.
type recvArena struct {
	capnp.ReadOnlySingleSegment
	buf *recvBuf
	rm  *recvMsg // the message this arena is part of
}

func (a *recvArena) Release() {
	a.ReadOnlySingleSegment.Release()
	if b := a.buf; b != nil {
		a.buf = nil
		putRecvBuf(b)
	}
}

// recvMsg is a received single-segment message with its arena.
type recvMsg struct {
	msg   capnp.Message
	arena recvArena
}

// recvMsgs holds recvMsg structs for reuse. Only recycleRecv puts one
// back, at the few places where the message's last user is certain: a
// call's parameters released once (answer.releaseArgs), a Return's
// results released by the caller's ReleaseFunc. Elsewhere a received
// message is released as usual and its struct left to the collector.
var recvMsgs sync.Pool

func newRecvMsg() *recvMsg {
	if rm, ok := recvMsgs.Get().(*recvMsg); ok {
		return rm
	}
	rm := &recvMsg{}
	rm.arena.rm = rm
	return rm
}

// recycleRecv releases msg, a received message of which the caller is
// certainly the last user (nothing reads it after, nothing releases it
// again), and keeps its struct for another received message. A Struct
// read from msg and wrongly used after this would read the next message
// instead of nothing: under the race detector, a read from another
// goroutine is reported, as Message.Reset writes every field of msg.
func recycleRecv(msg *capnp.Message) {
	a, ok := msg.Arena.(*recvArena)
	msg.Release()
	if ok && &a.rm.msg == msg {
		recvMsgs.Put(a.rm)
	}
}

// recvMultiArena is the arena of a received multi-segment message.
type recvMultiArena struct {
	capnp.Arena
	buf *recvBuf
}

func (a *recvMultiArena) Release() {
	a.Arena.Release()
	if b := a.buf; b != nil {
		a.buf = nil
		putRecvBuf(b)
	}
}
