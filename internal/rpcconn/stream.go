package rpcconn

import (
	"bytes"
	"encoding/binary"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/schemas"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"capnproto.org/go/capnp/v3/std/capnp/schema"
	"capnproto.org/go/capnp/v3/std/capnp/stream"
)

// StreamWindow is how many calls to `-> stream` methods may be in flight
// on a connection (sent, and their answers not yet released): the next
// one waits. go-capnp's Client.SendStreamCall starts a goroutine per call
// that lives until the call's answer is released, so this bounds those
// goroutines too; MaxCalls alone would allow 1024 of them. Streaming
// methods are recognised by their results type (stream.capnp's
// StreamResult) in the schemas registered with go-capnp's
// schemas.DefaultRegistry: capnpc-go's code only offers RegisterSchema, so
// the package holding the generated code must call it (package schema
// does, in an init function); calls to a stream method of an interface
// that is not registered are bounded by MaxCalls only.
//
// Whether a method streams is looked up only for calls made while at
// least streamLookupMin calls are in flight (the first lookup in a
// schema file costs a few hundred microseconds), so up to StreamWindow +
// streamLookupMin streamed calls may be in flight.
//
// Each of those goroutines outlives the release of its answer a little:
// it then takes the client's state mutex, which a fast sender holds
// often. With 64, 20 to 60 of them piled up there and the process went
// past 100 goroutines in most runs of bench's Stream64B; 48 keeps it
// under, at the same rate.
const StreamWindow = 48

const streamLookupMin = 8

// enqueueCall queues msg, a Call (ext its lent segments), and reports
// whether the caller must have the queue written (enqueue), whether msg
// was encoded into the queue at once, for the caller to release once it
// has let go of c.mu: a direct call to a `-> stream` method (stream), one
// of many small ones (enqueueBytes), and whether the caller should write
// the queue itself (streamWriteAt).
func (c *lockedConn) enqueueCall(msg *capnp.Message, ext *outExt, stream bool) (kick, encoded, write bool) {
	if stream && ext == nil && c.observe == nil {
		if kick, queued, err := c.conn().enqueueBytes(msg); err == nil {
			return kick, true, queued >= streamWriteAt
		}
	}
	return c.conn().enqueueExt(msg, nil, ext), false, false
}

// streamWriteAt is how many bytes of queued messages, nobody writing
// them, a stream's sender writes itself (Conn.flush) rather than leave
// them to the writer goroutine it woke when the queue was empty. A
// sender that never blocks keeps its processor: the writer it woke waits
// behind it, in Go's scheduler, for as long as the sender runs (150 us
// and more were seen, with another processor idle), while the peer has
// nothing to read. For the same reason, a sender about to wait for room
// in the window writes what it queued first (sendMsg).
const streamWriteAt = 8 << 10

// bareReturn is the frame of a Return with empty results and no
// capabilities that needs no Finish, as AllocResults(capnp.ObjectSize{})
// builds it and Return completes it: what every call to a `-> stream`
// method, or to a method without results, returns. Such a Return is
// queued as its question's ID alone and written from this template: no
// message is built, written through go-capnp or released for it.
var bareReturn = newBareTemplate()

type bareTemplate struct {
	frame []byte
	idOff int // where the answer ID is, little-endian
}

// size is the template's frame size.
func (t *bareTemplate) size() uint64 { return uint64(len(t.frame)) }

// match returns the answer ID of msg, a received single-segment message,
// if it is the template's Return byte for byte.
func (t *bareTemplate) match(msg *capnp.Message) (uint32, bool) {
	if msg.NumSegments() != 1 {
		return 0, false
	}
	seg, err := msg.Segment(0)
	if err != nil {
		return 0, false
	}
	b, want := seg.Data(), t.frame[8:]
	off := t.idOff - 8
	if len(b) != len(want) || !bytes.Equal(b[:off], want[:off]) || !bytes.Equal(b[off+4:], want[off+4:]) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[off:]), true
}

// handleBareReturn handles msg if it is a Return with empty results that
// needs no Finish (bareReturn, as this package sends them) for a direct
// call to a `-> stream` method, the Return of most of a stream's calls,
// without reading it through go-capnp: nothing of it is needed but the
// answer ID. It reports whether it did; anything else (another message,
// another question, one in a state that needs more) goes through
// handleReturn, which checks it as usual.
func (c *Conn) handleBareReturn(msg *capnp.Message) bool {
	if c.observe != nil {
		return false
	}
	id, ok := bareReturn.match(msg)
	if !ok {
		return false
	}
	lc := c.lock()
	if c.closing {
		lc.unlock()
		msg.Release()
		return true
	}
	var q *question
	if uint64(id) < uint64(len(c.questions)) {
		q = c.questions[id]
	}
	if !lc.bareReturnable(q) {
		lc.unlock()
		return false
	}
	q.to(lc, qReturned)
	lc.closeQuestion(q)
	// The bare Returns read already after this one are taken here too,
	// straight from the read buffer: no message is made for them, and
	// the connection's lock is taken once for all.
	batch := c.bareBatch[:0]
	for {
		id, ok := c.peekBareReturn()
		if !ok {
			break
		}
		var q *question
		if uint64(id) < uint64(len(c.questions)) {
			q = c.questions[id]
		}
		if !lc.bareReturnable(q) {
			break
		}
		c.fr.br.Discard(len(bareReturn.frame))
		q.to(lc, qReturned)
		lc.closeQuestion(q)
		batch = append(batch, q)
	}
	lc.unlock()
	if len(batch) > 0 {
		c.role.stats.bareRead.Add(uint64(len(batch)))
	}
	recycleRecv(msg)
	q.settle(capnp.Ptr{}, nil, true)
	for i, q := range batch {
		q.settle(capnp.Ptr{}, nil, true)
		batch[i] = nil
	}
	c.bareBatch = batch[:0]
	return true
}

// bareReturnable reports whether q, named by a bare Return, is a direct
// stream call's question that such a Return settles with nothing else to
// do.
func (lc *lockedConn) bareReturnable(q *question) bool {
	return q != nil && q.dc != nil && q.dc.stream && q.state == qOpen && q.taking == nil &&
		len(q.paths) == 0 && len(q.paramCaps) == 0
}

// peekBareReturn returns the answer ID of the next frame if it is read
// already and is a bare Return (bareReturn's frame byte for byte); only
// the role's holder may ask, and only between frames.
func (c *Conn) peekBareReturn() (uint32, bool) {
	br, t := c.fr.br, &bareReturn
	n := len(t.frame)
	if br == nil || c.fr.pending || br.Buffered() < n {
		return 0, false
	}
	b, err := br.Peek(n)
	if err != nil || !bytes.Equal(b[:t.idOff], t.frame[:t.idOff]) || !bytes.Equal(b[t.idOff+4:], t.frame[t.idOff+4:]) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[t.idOff:]), true
}

func (t *bareTemplate) append(dst []byte, id uint32) []byte {
	n := len(dst)
	dst = append(dst, t.frame...)
	binary.LittleEndian.PutUint32(dst[n+t.idOff:], id)
	return dst
}

// newBareTemplate builds the template twice, with answer IDs of all
// zeros and all ones, to find the ID's bytes: the only ones that differ.
func newBareTemplate() bareTemplate {
	build := func(id uint32) []byte {
		msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			panic(err)
		}
		root, err := rpccp.NewRootMessage(seg)
		if err != nil {
			panic(err)
		}
		ret, err := root.NewReturn()
		if err != nil {
			panic(err)
		}
		ret.SetAnswerId(id)
		ret.SetReleaseParamCaps(false)
		payload, err := ret.NewResults()
		if err != nil {
			panic(err)
		}
		st, err := capnp.NewStruct(payload.Segment(), capnp.ObjectSize{})
		if err != nil {
			panic(err)
		}
		if err := payload.SetContent(st.ToPtr()); err != nil {
			panic(err)
		}
		ret.SetNoFinishNeeded(true)
		frame, err := appendFrame(nil, msg, nil)
		if err != nil {
			panic(err)
		}
		return frame
	}
	zeros, ones := build(0), build(1<<32-1)
	t := bareTemplate{frame: zeros, idOff: -1}
	for i := range zeros {
		if zeros[i] != ones[i] {
			t.idOff = i
			break
		}
	}
	if len(zeros) != len(ones) || t.idOff < 0 || t.idOff+4 > len(zeros) || t.idOff%4 != 0 ||
		!bytes.Equal(zeros[:t.idOff], ones[:t.idOff]) || !bytes.Equal(zeros[t.idOff+4:], ones[t.idOff+4:]) ||
		binary.LittleEndian.Uint32(ones[t.idOff:]) != 1<<32-1 {
		panic("rpcconn: the Return template's answer ID is not where expected")
	}
	return t
}

// DirectStreamWindow and DirectStreamBytes bound the calls to `-> stream`
// methods that package mp sends itself (Call.SendStream): those start no
// goroutine, so the window is set by what batching needs rather than by
// StreamWindow's goroutines. At most DirectStreamWindow calls (and half
// the connection's MaxCalls, for a peer with the same limits), and
// DirectStreamBytes of their messages, are in flight; a sender held by a
// full window waits until an eighth of it is free. A stream of small
// messages then goes out 8 KiB at a time (streamWriteAt), the peer
// answers up to 64 calls in one write (maxDeferred), and the peer always
// has most of a window to work on while the sender refills it.
const (
	DirectStreamWindow = 512
	DirectStreamBytes  = 1 << 20
)

// directStreamWindow is DirectStreamWindow within the connection's
// limits.
func (c *Conn) directStreamWindow() int {
	return max(1, min(DirectStreamWindow, c.lim.maxCalls/2))
}

// streamFull reports whether a stream call of size bytes must wait for
// room in a window of n calls.
func (c *lockedConn) streamFull(n int, size uint64) bool {
	return c.streamOpen >= n || (c.streamOpen > 0 && c.streamBytes+size > DirectStreamBytes)
}

type methodKey struct {
	iface  uint64
	method uint16
}

// streamMethods caches, by method, whether it is declared `-> stream`.
var streamMethods struct {
	sync.RWMutex
	m      map[methodKey]bool
	ifaces map[uint64]bool // interfaces looked up
}

// isStreamMethod reports whether m is declared `-> stream` in a
// registered schema.
func isStreamMethod(m capnp.Method) bool {
	k := methodKey{m.InterfaceID, m.MethodID}
	streamMethods.RLock()
	v, ok := streamMethods.m[k]
	looked := streamMethods.ifaces[m.InterfaceID]
	streamMethods.RUnlock()
	if ok || looked {
		return v
	}
	found := lookupStreamMethods(m.InterfaceID)
	streamMethods.Lock()
	defer streamMethods.Unlock()
	if streamMethods.m == nil {
		streamMethods.m = make(map[methodKey]bool)
		streamMethods.ifaces = make(map[uint64]bool)
	}
	if !streamMethods.ifaces[m.InterfaceID] {
		streamMethods.ifaces[m.InterfaceID] = true
		for _, id := range found {
			streamMethods.m[methodKey{m.InterfaceID, id}] = true
		}
	}
	return streamMethods.m[k]
}

// lookupStreamMethods returns the ordinals of interface id's streaming
// methods, from the registered schemas.
func lookupStreamMethods(id uint64) []uint16 {
	node, ok := FindInterface(id)
	if !ok {
		return nil
	}
	var out []uint16
	methods, err := node.Interface().Methods()
	if err != nil {
		return nil
	}
	for j := 0; j < methods.Len(); j++ {
		if methods.At(j).ResultStructType() == stream.StreamResult_TypeID {
			out = append(out, uint16(j))
		}
	}
	return out
}

// FindInterface returns the schema node of interface id from the schemas
// registered with go-capnp's schemas.DefaultRegistry, and false if none
// is. The first look-up in a schema file decompresses it (a few hundred
// microseconds): keep it off start-up paths.
func FindInterface(id uint64) (schema.Node, bool) {
	data := schemas.Find(id)
	if data == nil {
		return schema.Node{}, false
	}
	msg, err := capnp.Unmarshal(data)
	if err != nil {
		return schema.Node{}, false
	}
	req, err := schema.ReadRootCodeGeneratorRequest(msg)
	if err != nil {
		return schema.Node{}, false
	}
	nodes, err := req.Nodes()
	if err != nil {
		return schema.Node{}, false
	}
	for i := 0; i < nodes.Len(); i++ {
		if node := nodes.At(i); node.Id() == id && node.Which() == schema.Node_Which_interface {
			return node, true
		}
	}
	return schema.Node{}, false
}
