package rpcconn

// What this package assumes of go-capnp beyond its documented API: each
// assumption below, checked against go-capnp checkedVersion, and why it is
// needed. gocapnp_test.go fails when go.mod requires another version
// (TestGoCapnpVersion), and has a test per assumption that fails if
// go-capnp's layout or behaviour changed.
//
// Two paths run on a connection. The capnpc-go path (generated clients and
// servers of capnpc-go, go-capnp's Promise, Answer, AnswerQueue and
// server package) needs 1, 2, 5 and 6 below; the generated path of package
// mp (Call, ServerCall: no go-capnp Promise or server) needs 3 and 4, and
// shares 1 and 2, as every message is built on go-capnp's message layer.
//
//  1. bufferpool.Default is a Pool value that go-capnp's single-segment
//     arenas take their buffers from and give them back to: swapped at init
//     for one with buckets up to 128 MiB (go-capnp's own stops at 512 KiB,
//     so every larger message cost fresh memory). TestBufferPoolSwapped.
//  2. go-capnp zeroes every byte it hands out of a pooled buffer (alloc),
//     but for the root pointer word (Message.Reset and
//     allocRootPointerSpace call Arena.Allocate directly); and
//     SingleSegmentArena.Segment(0) is the arena's own Segment, which may be
//     cleared to make the arena forget its buffer. So releaseOut gives a
//     buffer back with only its first word zeroed, rather than go-capnp's
//     two passes over all of it. TestRecycledBufferReadsAsZero.
//  3. capnp.Struct's unexported fields (seg, off, size, depthLimit, flags)
//     are laid out as structMirror: structOff reads a struct's address in
//     its segment, which lending (lend.go: a double-far pointer written by
//     hand) and call templates (callmsg.go: sibling) need. Checked again
//     at start by checkStructLayout: if it fails, nothing is lent and no
//     template is used. TestStructMirror, TestStructLayout.
//  4. go-capnp places the structs of a fresh single-segment message one
//     after the other from word 1, and writes a struct pointer as the
//     encoding says (checkStructLayout checks both; callTemplate.build
//     checks each placement too).
//  5. capnp.Promise holds its state in a field state whose mutex is a
//     sync.Mutex named mu at a fixed offset; Future.Client called twice on
//     an unresolved path returns with that lock held (answer.go:441, a
//     bug), which would stop our reader at the Return. settle looks at the
//     lock first (promiseLockStuck). If the field is not found the check is
//     off and settle resolves as before. TestPromiseLockFound,
//     TestLeakedPromiseLockSparesTheConnection.
//  6. A go-capnp server's Recv returns its *capnp.AnswerQueue for calls
//     pipelined on a running call, and AnswerQueue.Fulfill crashes on a
//     queued call whose target gives a nil PipelineCaller. heldCall
//     recognises it (isAnswerQueue) to keep such calls until the call
//     returns. TestServerRecvIsAnswerQueue.
//  7. go-capnp's rpc closes a connection with an Abort whose reason is
//     "connection closed" (rpc.ErrConnClosed) and type failed:
//     ProtocolError.NormalClose takes it for an ordinary close.
//     TestGoCapnpCloseReason.
//  8. go-capnp's Answer prefixes an error with the method's IDs:
//     relayRemote takes the peer's exception out of it before it is
//     relayed, so that the next caller reads the peer's reason alone.
//     TestRelayRemote.
//  9. Releasing a received message writes nothing into its bytes:
//     ReadOnlySingleSegment.Release forgets its data, and the arena of
//     capnp.Unmarshal (no buffer pool) zeroes nothing on Release. A string
//     made over a received frame (sharing.go, TextString) outlives the
//     message's release. TestTextSharesFrame (a released message's Text,
//     one segment and several, keeps its bytes).
//
// Worked around elsewhere, without relying on go-capnp's internals: no
// path of ours hands go-capnp a nil PipelineCaller (failedCaller,
// orFailed in held.go), as AnswerQueue.Fulfill calls a method of it.

import (
	"encoding/binary"
	"errors"
	"reflect"
	"sync"
	"time"
	"unsafe"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/exp/bufferpool"
)

// checkedVersion is the go-capnp version the assumptions above were
// checked against.
const checkedVersion = "v3.1.0-alpha.2"

// 1. The pool of outgoing buffers.

func init() {
	bufferpool.Default = *bufferpool.NewPool(1024, 27)
}

// 2. Zeroing.

// rootWord is the part of a pooled buffer go-capnp takes without zeroing
// it: the root pointer of a new message.
const rootWord = 8

// releaseOut releases m, a message built by newMessage, without the two
// passes of zeroing go-capnp's Release makes over the whole segment (the
// arena's, then bufferpool.Put's): alloc zeroes every byte again when it
// hands it out, so only the root word must be zero for the next message.
// For a 1 MiB message those two passes were two thirds of the zeroing
// (alloc's is the third). The arena is made to forget its buffer, so that
// a Struct read from m after its release reads nothing, as after Release,
// rather than the next message built in the buffer.
func releaseOut(m *capnp.Message) {
	if a, ok := m.Arena.(*capnp.SingleSegmentArena); ok {
		seg := a.Segment(0)
		b := seg.Data()
		*seg = capnp.Segment{}
		recycleSendBuf(b)
	}
	m.Release()
}

// recycleSendBuf puts b, a buffer from bufferpool.Default, back with only
// its root word zeroed. Under the race detector the rest is poisoned, so
// that every test also checks that go-capnp reads nothing of a buffer it
// has not zeroed (TestRecycledBufferReadsAsZero checks it directly).
func recycleSendBuf(b []byte) {
	b = b[:cap(b)]
	if len(b) < rootWord {
		return // not from the pool (none of newMessage's is this small)
	}
	if raceEnabled {
		poison(b[rootWord:])
	}
	clear(b[:rootWord])
	bufferpool.Default.Put(b[:0])
}

// 3 and 4. capnp.Struct's layout.

// structMirror has the layout of capnp.Struct (capnp.StructKind).
type structMirror struct {
	seg        *capnp.Segment
	off        uint32
	size       capnp.ObjectSize
	depthLimit uint
	flags      uint8
}

// structOff returns the address of s in its segment. go-capnp keeps it
// unexported; structLayoutOK says whether this reads it.
func structOff(s capnp.Struct) uint32 {
	return (*structMirror)(unsafe.Pointer(&s)).off
}

// sibling returns the struct of size at off in the segment of s, as
// go-capnp would read it: s with another address and size (structLayoutOK
// says that this is the layout).
func sibling(s capnp.Struct, off uint32, size capnp.ObjectSize) capnp.Struct {
	m := (*structMirror)(unsafe.Pointer(&s))
	m.off, m.size = off, size
	return s
}

var structLayoutOK = checkStructLayout()

// checkStructLayout allocates structs in a fresh message, where go-capnp
// places them one after the other from word 1 (word 0 is the root
// pointer), and checks that structOff finds them there. Lending is off
// if it does not (another go-capnp version): fields are then copied.
func checkStructLayout() bool {
	if unsafe.Sizeof(capnp.Struct{}) != unsafe.Sizeof(structMirror{}) {
		return false
	}
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(make([]byte, 0, 256)))
	if err != nil {
		return false
	}
	a, err := capnp.NewRootStruct(seg, capnp.ObjectSize{DataSize: 8, PointerCount: 1})
	if err != nil {
		return false
	}
	b, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 16, PointerCount: 2})
	if err != nil {
		return false
	}
	m := (*structMirror)(unsafe.Pointer(&b))
	ok := structOff(a) == 8 && structOff(b) == 24 && m.seg == seg && m.size == b.Size() && b.Message() == msg
	if !ok {
		return false
	}
	// The pointer SetPtr writes must be where lendField computes it.
	if err := a.SetPtr(0, b.ToPtr()); err != nil {
		return false
	}
	slot := structOff(a) + uint32(a.Size().DataSize)
	raw := binary.LittleEndian.Uint64(seg.Data()[slot:])
	// A struct pointer to b: offset (24-16-8)/8 = 0, 2 data words, 2 pointers.
	return raw == 0|0<<2|2<<32|2<<48
}

// 5. Promise's lock.
//
// go-capnp leaves a Promise's lock held when Future.Client is called on a
// path of an unresolved promise that already has a client. That is a
// program calling, say, a generated Result() twice on a call still in
// flight. The promise's next Lock never returns: the Resolve that its
// Return brings would stop our reader, and with it the whole connection.
//
// settle therefore looks at the lock before resolving: free, or taken and
// given back within promiseLockPatience, it resolves on the reader as
// always; held longer, it logs the fault and leaves the Resolve to a
// goroutine of its own, which waits for the lock (for ever if it was
// leaked, and it then belongs to that promise, which go-capnp has broken:
// nothing can stop it). The connection carries on.
const promiseLockPatience = 250 * time.Millisecond

// promiseLockOffset is the offset of the sync.Mutex guarding a
// capnp.Promise's state; 0 if it was not found.
var promiseLockOffset = findPromiseLock()

func findPromiseLock() uintptr {
	state, ok := reflect.TypeFor[capnp.Promise]().FieldByName("state")
	if !ok || state.Type.Kind() != reflect.Struct {
		return 0
	}
	mu, ok := state.Type.FieldByName("mu")
	if !ok || mu.Type != reflect.TypeFor[sync.Mutex]() {
		return 0
	}
	return state.Offset + mu.Offset
}

// promiseLock returns the lock of p's state, or nil if it was not found.
func promiseLock(p *capnp.Promise) *sync.Mutex {
	if promiseLockOffset == 0 {
		return nil
	}
	return (*sync.Mutex)(unsafe.Add(unsafe.Pointer(p), promiseLockOffset))
}

// promiseLockStuck reports whether p's lock stayed held for
// promiseLockPatience; it waits only while the lock is held.
func promiseLockStuck(p *capnp.Promise) bool {
	mu := promiseLock(p)
	if mu == nil {
		return false
	}
	if mu.TryLock() {
		mu.Unlock()
		return false
	}
	deadline := time.Now().Add(promiseLockPatience)
	for wait := 10 * time.Microsecond; time.Now().Before(deadline); wait = min(2*wait, 10*time.Millisecond) {
		time.Sleep(wait)
		if mu.TryLock() {
			mu.Unlock()
			return false
		}
	}
	return true
}

// 6. The server's AnswerQueue.

// isAnswerQueue reports whether pc is a go-capnp server's queue of the
// calls pipelined on a call it runs.
func isAnswerQueue(pc capnp.PipelineCaller) bool {
	_, ok := pc.(*capnp.AnswerQueue)
	return ok
}

// 7. go-capnp's reason for an ordinary close.

// goCapnpCloseReason is the reason of the Abort go-capnp's rpc sends when
// it closes a connection (rpc.ErrConnClosed).
const goCapnpCloseReason = "connection closed"

// 8. Errors through go-capnp's Answer.

// relayRemote returns the error of a forwarded call to return to its own
// caller: the peer's exception as it came, if it is one, without the
// method's IDs that go-capnp's Answer put in front of it (the next caller
// would read them as part of the reason).
func relayRemote(err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return &exc.Exception{Type: re.Type, Cause: re}
	}
	return err
}
