package rpcconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// ErrClosed is Conn.Err after this side closed the connection.
var ErrClosed = errors.New("rpcconn: connection closed")

// peerGoneGrace is how long a write that failed because the peer closed
// leaves the reader to find out why (see writer).
const peerGoneGrace = time.Second

// abortWriteTimeout bounds how long the writer may spend sending an Abort
// (and finishing the write it was in) once the connection is ending.
const abortWriteTimeout = 250 * time.Millisecond

// A Conn is one Cap'n Proto RPC connection. It runs a writer goroutine
// and one or two goroutines that read (more while deliveries are stuck in
// application code: role.go), which it owns: all have exited when Done
// is closed.
type Conn struct {
	lim     limits
	log     *slog.Logger
	owner   any // Options.Owner, for the contexts of delivered calls
	observe func(sent bool, m rpccp.Message)
	icept   Interceptor
	rwc     io.ReadWriteCloser
	closer  sync.Once
	done    chan struct{}
	wdone   chan struct{} // closed when the writer has exited

	// mu guards the tables and the fields below it.
	mu        sync.Mutex
	closing   bool
	cause     error // why the connection ended; set once with closing
	discErr   error // disconnected(cause): what calls fail with
	boot      capnp.Client
	questions []*question // by ID; nil entries are free
	freeQ     []uint32
	qCount    int           // questions counted against MaxCalls
	qBytes    uint64        // their call messages' bytes
	qWait     chan struct{} // closed when qCount or qBytes drop
	sWait     chan struct{} // closed when streamOpen drops to sWaitAt
	sWaitAt   int           // seven eighths of the window of the senders waiting (sendMsg)
	qOpen     int           // questions sent whose Return has not come
	// plainOpen counts the questions among qOpen that are not calls to
	// `-> stream` methods (question.plain); the writer reads it without
	// c.mu.
	plainOpen atomic.Int32
	// streamOpen counts the calls to `-> stream` methods among qCount
	// (at most StreamWindow, or the window of direct stream calls), and
	// streamBytes their call messages' bytes.
	streamOpen  int
	streamBytes uint64
	// lastMethod is the method whose isStreamMethod sendCall looked up
	// last.
	lastMethod struct {
		k          methodKey
		stream, ok bool
	}
	// warnedUnreleased: the warning about answers their callers never
	// released has been logged.
	warnedUnreleased bool
	answers          map[uint32]*answer
	aBytes           uint64
	active           int           // answers whose Return has not run
	idle             chan struct{} // closed when active reaches 0 while closing
	exports          []*export
	freeE            []uint32
	imports          map[uint32]*importClient
	// deadPromises are promise imports released before they resolved:
	// a Resolve for one is dropped, not refused. deadOverflow says that
	// the set stopped growing at MaxTableSize, so that unknown Resolves
	// are dropped too.
	deadPromises map[uint32]bool
	deadOverflow bool
	// finishOptional holds the IDs of answers returned with
	// noFinishNeeded and already forgotten: a Finish for one (from a peer
	// that does not know the flag) is dropped, and a call pipelined on
	// one fails (its results hold no capability). A new question with the
	// ID takes it out. finishOverflow says that the set stopped growing
	// at MaxTableSize, so that such messages for unknown IDs are treated
	// alike.
	finishOptional idSet
	finishOverflow bool
	embargoes      map[uint32]*embargo
	nextEmb        uint32
	watches        []*ctxWatch // kept for calls under the same context
	freeW          []*ctxWatch // for reuse (ctxwatch.go)

	// role is who reads (role.go); fr reads frames through kr.
	role readRole
	fr   *frameReader
	// rcall is the template of the last Call received (recvcall.go);
	// the role's holder's, as fr.
	rcall recvTemplate
	rret  retTemplateIn // of the last Return with results received
	// bareBatch is handleBareReturn's list of questions, kept for reuse;
	// the role's holder's, as fr.
	bareBatch []*question
	kr        kickReader
	// deadline is rwc's SetReadDeadline, to pull a reading caller out
	// of Read (role.go); nil if rwc has none: callers never read then.
	deadline interface{ SetReadDeadline(time.Time) error }
	// openQ mirrors qOpen, for the role's decisions without c.mu.
	openQ atomic.Int32
	// patience is how long the role may stay free or busy (role.go).
	patience time.Duration
	// fault is a state transition refused under c.mu (states.go), for
	// lockedConn.unlock to report once c.mu is let go; guarded by c.mu.
	fault error
	// flushDue: a Return was queued without being written, for the
	// goroutine reading to write once the messages already in are
	// handled (answer.deferKick).
	flushDue atomic.Bool
	// deferredFor counts the messages read since flushDue was set;
	// touched only by the role's holder.
	deferredFor int

	// raw is rwc's file descriptor for a non-blocking write(2) from the
	// goroutine that queued a message (flush); nil if rwc has none.
	raw syscall.RawConn

	// qmu guards the outgoing queue.
	qmu      sync.Mutex
	outq     []outMsg
	spare    []outMsg
	rawFree  [][]byte // buffers of raw entries the writer is done with
	outBytes uint64
	outSpace chan struct{} // closed when the writer drains a batch
	wake     chan struct{} // capacity 1: the writer has something to do
	stop     bool
	abortMsg *capnp.Message
	// writing says that a goroutine (the writer, or one in flush) is
	// writing: it alone writes to rwc, and before it stops it looks at
	// the queue again. pending holds bytes that flush could not write
	// at once; the writer writes them first.
	writing bool
	pending []byte
	dbuf    []byte             // flush's encoding buffer; used while writing
	dn      int                // bytes written by writeDirect
	direct  func(uintptr) bool // writeDirect, allocated once
}

type outMsg struct {
	msg    *capnp.Message
	size   uint64
	sentTo *answer // msg is its Return: a.onSent once written or dropped; else msg is released
	ext    *outExt // lent segments sent after msg's own, or nil (lend.go)
	// With msg nil, raw holds whole frames, encoded as they were queued
	// (enqueueBytes, enqueueBare): queued one after the other, they share
	// one entry.
	raw []byte
}

// NewConn runs the RPC protocol on rwc, which the Conn owns from then on.
// If rwc has SetWriteDeadline (a net.Conn), it is used to bound the
// sending of an Abort at the end.
func NewConn(rwc io.ReadWriteCloser, opts *Options) *Conn {
	c := &Conn{
		lim:          opts.limits(),
		log:          slog.New(slog.DiscardHandler),
		rwc:          rwc,
		done:         make(chan struct{}),
		wdone:        make(chan struct{}),
		answers:      make(map[uint32]*answer),
		imports:      make(map[uint32]*importClient),
		deadPromises: make(map[uint32]bool),
		embargoes:    make(map[uint32]*embargo),
		wake:         make(chan struct{}, 1),
	}
	if opts != nil {
		if opts.Logger != nil {
			c.log = opts.Logger
		}
		c.boot = opts.BootstrapClient
		c.observe = opts.Observe
		c.icept = opts.Interceptor
		c.owner = opts.Owner
		c.patience = opts.readPatience
	}
	if c.patience <= 0 {
		c.patience = defaultReadPatience
	}
	if _, ok := rwc.(net.Conn); ok {
		// A net.Conn's descriptor is non-blocking.
		if sc, ok := rwc.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				c.raw = raw
				c.direct = c.writeDirect
				raiseSendBuffer(raw)
			}
		}
	}
	if d, ok := rwc.(interface{ SetReadDeadline(time.Time) error }); ok {
		c.deadline = d
	}
	c.kr.c = c
	c.fr = newFrameReader(bufio.NewReaderSize(&c.kr, 64<<10), &c.lim)
	w := newReader()
	c.role.holder, c.role.state = w, roleReading
	c.role.readers = 1
	go c.readLoop(w)
	go c.writer()
	return c
}

// Done is closed once the connection has ended, its goroutines have
// exited, and every call it delivered to a local capability has returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is open and says why it ended after:
// ErrClosed if Close ended it, a *ProtocolError if either side aborted,
// or the error that ended the stream (io.EOF, a reset, ...).
func (c *Conn) Err() error {
	lc := c.lock()
	defer lc.unlock()
	return c.cause
}

// Close ends the connection without waiting: pending calls fail with
// ErrDisconnected, and the socket is closed. It is idempotent and always
// returns nil; Done says when the connection is over.
func (c *Conn) Close() error {
	c.shutdown(ErrClosed, false)
	return nil
}

// CloseWithError ends the connection as Close does, for cause: pending
// and later calls fail with an error that wraps both ErrDisconnected and
// cause, Err returns cause, and the peer is sent an Abort saying why.
func (c *Conn) CloseWithError(cause error) {
	c.shutdown(cause, true)
}

func (c *Conn) closeRWC() { c.closer.Do(func() { c.rwc.Close() }) }

// shutdown ends the connection for cause, sending an Abort if abort.
func (c *Conn) shutdown(cause error, abort bool) {
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return
	}
	c.closing = true
	c.cause = cause
	c.discErr = disconnected(cause)
	var rejects []*question
	for _, q := range c.questions {
		if q != nil && q.state == qOpen {
			q.to(lc, qReturned)
			rejects = append(rejects, q)
		}
	}
	c.questions, c.freeQ = nil, nil
	lc.stopWatches()
	if c.qWait != nil {
		close(c.qWait)
		c.qWait = nil
	}
	if c.sWait != nil {
		close(c.sWait)
		c.sWait = nil
	}
	var release []capnp.Client
	var msgs []*capnp.Message
	var cancels []*answer
	var pending []pendingCall
	var waiters []*answerHook
	for _, a := range c.answers {
		cancels = append(cancels, a)
		pending = append(pending, a.pipeline...)
		a.pipeline = nil
		waiters = append(waiters, a.waiters...)
		a.waiters = nil
		if m := a.releasableMsg(lc, true); m != nil {
			msgs = append(msgs, m)
		}
	}
	c.answers = nil
	for _, e := range c.exports {
		if e != nil {
			release = append(release, e.client)
			e.drop(lc)
		}
	}
	c.exports, c.freeE = nil, nil
	broken := lc.unresolvedPromises()
	for _, h := range c.imports {
		h.gone = true
	}
	c.imports = nil
	var lift []*embargo
	for _, e := range c.embargoes {
		lift = append(lift, e)
	}
	c.embargoes = nil
	release = append(release, c.boot)
	c.boot = capnp.Client{}
	if c.active > 0 {
		c.idle = make(chan struct{})
	}
	discErr := c.discErr
	lc.unlock()

	if cause != nil {
		c.log.Debug("rpcconn: connection ended", "err", cause)
	}
	if testShutdownHook != nil {
		testShutdownHook(c)
	}
	lq := c.lockQueue()
	c.stop = true
	if abort {
		c.abortMsg = newAbortMessage(cause)
	}
	if c.outSpace != nil {
		close(c.outSpace)
		c.outSpace = nil
	}
	lq.unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if d, ok := c.rwc.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
	} else {
		c.closeRWC()
	}

	for _, a := range cancels {
		a.ctx.cancel()
	}
	for _, p := range pending {
		p.fail(discErr)
	}
	for _, h := range waiters {
		h.settle(capnp.Client{}, discErr)
	}
	for _, q := range rejects {
		q.resolve(capnp.Ptr{}, discErr)
	}
	c.closeRole()
	breakPromises(broken, discErr)
	for _, e := range lift {
		e.lift()
	}
	for _, m := range msgs {
		releaseOut(m)
	}
	for _, cl := range release {
		cl.Release()
	}
}

// testShutdownHook, set by tests only, runs in shutdown once the
// connection is marked as ending, before anything is failed.
var testShutdownHook func(*Conn)

func newAbortMessage(cause error) *capnp.Message {
	msg, root := newMessage()
	e, err := root.NewAbort()
	if err != nil {
		return nil
	}
	var pe *ProtocolError
	reason := cause.Error()
	if errors.As(cause, &pe) {
		reason = pe.Reason
	}
	e.SetType(rpccp.Exception_Type_failed)
	e.SetReason(reason)
	return msg
}

// msgPool holds Message structs of outgoing messages that only this
// package ever referenced (calls, finishes, releases, exceptions...): the
// writer puts them back once written. A Return's results message, which a
// server method wrote into, comes back through recycleOut only once its
// answer has let it go for good (answer.releasableMsg: written, and
// finished or forgotten).
var msgPool sync.Pool

// recycleOut releases m, an outgoing message nothing uses any more, and
// keeps its struct for newMessage. A server method that wrongly kept its
// results past its return would read the next message built in it: under
// the race detector, that read, from another goroutine, is reported, as
// Message.Reset writes every field of m.
func recycleOut(m *capnp.Message) {
	releaseOut(m)
	msgPool.Put(m)
}

func newMessage() (*capnp.Message, rpccp.Message) {
	msg, seg := newMessageSeg()
	root, err := rpccp.NewRootMessage(seg)
	if err != nil {
		panic(err) // allocation in a fresh message cannot fail
	}
	return msg, root
}

// newMessageSeg returns an empty message of one segment (from msgPool),
// and the segment.
func newMessageSeg() (*capnp.Message, *capnp.Segment) {
	var msg *capnp.Message
	var seg *capnp.Segment
	var err error
	if m, ok := msgPool.Get().(*capnp.Message); ok {
		msg = m
		seg, err = msg.Reset(capnp.SingleSegment(nil))
	} else {
		msg, seg, err = capnp.NewMessage(capnp.SingleSegment(nil))
	}
	if err != nil {
		panic(err) // a fresh single-segment arena cannot fail to allocate
	}
	return msg, seg
}

// send queues msg for the writer without waiting. The caller may hold
// c.mu. If the connection is ending, msg is dropped (released, or handed
// to a.onSent).
func (c *Conn) send(msg *capnp.Message, a *answer) {
	if c.enqueue(msg, a) {
		c.wakeWriter()
	}
}

// enqueue queues msg and reports whether the caller is now responsible
// for having it written: the queue was empty and nobody is writing. The
// caller then calls flush (or wakeWriter) as soon as it holds no lock;
// meanwhile other messages queued join msg. The caller may hold c.mu.
// The queue's size counts the memory msg holds (heldSize), not only the
// bytes it will write.
func (c *Conn) enqueue(msg *capnp.Message, a *answer) bool {
	return c.enqueueExt(msg, a, nil)
}

// enqueueExt is enqueue for a message with lent segments (ext, which may
// be nil): the writer sends them after msg's own, and calls ext.finish
// once done with them.
func (c *Conn) enqueueExt(msg *capnp.Message, a *answer, ext *outExt) bool {
	size := heldSize(msg)
	if ext != nil {
		size += ext.size
	}
	return c.enqueueOut(outMsg{msg: msg, size: size, sentTo: a, ext: ext})
}

// enqueueBare is enqueue for a Return with empty results for question id,
// written from a template (bareReturn): no message is built for it.
func (c *Conn) enqueueBare(id uint32) bool {
	lq := c.lockQueue()
	if c.stop {
		lq.unlock()
		return false
	}
	kick := len(c.outq) == 0 && !c.writing && len(c.pending) == 0
	tail := lq.rawTailLocked()
	n := len(*tail)
	*tail = bareReturn.append(*tail, id)
	lq.addRawLocked(len(*tail) - n)
	lq.unlock()
	return kick
}

// enqueueBytes is enqueue for msg, encoded at once into the raw bytes at
// the queue's tail: the caller releases msg as soon as it returns (its
// goroutine, not the writer's, so that the message's buffers go back to
// the pools of the processor that took them), and the writer writes the
// bytes of many such messages at once. For the many small messages of a
// stream. The caller may hold c.mu.
func (c *Conn) enqueueBytes(msg *capnp.Message) (kick bool, queued uint64, err error) {
	lq := c.lockQueue()
	if c.stop {
		lq.unlock()
		return false, 0, nil
	}
	kick = len(c.outq) == 0 && !c.writing && len(c.pending) == 0
	tail := lq.rawTailLocked()
	n := len(*tail)
	b, err := appendFrame(*tail, msg, nil)
	if err != nil {
		lq.unlock()
		return false, 0, err
	}
	*tail = b
	lq.addRawLocked(len(b) - n)
	if !c.writing {
		queued = c.outBytes
	}
	lq.unlock()
	return kick, queued, nil
}

// maxRawEntry is the most bytes one raw entry takes before the next.
const maxRawEntry = 32 << 10

// rawTailLocked returns the raw bytes at the queue's tail, adding an entry
// for them if the last is not one.
func (c *lockedQueue) rawTailLocked() *[]byte {
	if n := len(c.outq); n > 0 && c.outq[n-1].msg == nil && len(c.outq[n-1].raw) < maxRawEntry {
		return &c.outq[n-1].raw
	}
	var b []byte
	if k := len(c.rawFree); k > 0 {
		b = c.rawFree[k-1][:0]
		c.rawFree[k-1] = nil
		c.rawFree = c.rawFree[:k-1]
	} else {
		b = make([]byte, 0, 4<<10)
	}
	c.outq = append(c.outq, outMsg{raw: b})
	return &c.outq[len(c.outq)-1].raw
}

// addRawLocked counts n bytes added to the raw entry at the queue's tail.
func (c *lockedQueue) addRawLocked(n int) {
	c.outq[len(c.outq)-1].size += uint64(n)
	c.outBytes += uint64(n)
}

// freeRawLocked keeps the buffer of a raw entry written for reuse.
func (c *lockedQueue) freeRawLocked(b []byte) {
	if b != nil && cap(b) <= 2*maxRawEntry && len(c.rawFree) < 4 {
		c.rawFree = append(c.rawFree, b)
	}
}

func (c *Conn) enqueueOut(m outMsg) bool {
	lq := c.lockQueue()
	if c.stop {
		lq.unlock()
		dropOut(m)
		return false
	}
	kick := len(c.outq) == 0 && !c.writing && len(c.pending) == 0
	c.outq = append(c.outq, m)
	c.outBytes += m.size
	lq.unlock()
	return kick
}

func (c *Conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeDirect is flush's one attempt at writing c.dbuf: the writer waits
// if need be. It runs while c.writing is held.
func (c *Conn) writeDirect(fd uintptr) bool {
	if n, err := syscall.Write(int(fd), c.dbuf); err == nil && n > 0 {
		c.dn = n
	}
	return true
}

// kick has the queue written, by this goroutine (flush) if direct, else
// by the writer; the caller is responsible for it (enqueue said so).
func (c *Conn) kick(direct bool) {
	if direct {
		c.flush()
	} else {
		c.wakeWriter()
	}
}

// maxDirect is the most flush writes from the calling goroutine.
const maxDirect = 64 << 10

// flush writes the queued messages from the calling goroutine, with one
// non-blocking write(2), if nobody else is writing and they are small;
// whatever that write leaves, and everything else, goes to the writer.
// A call's message is thus sent without waking the writer goroutine: one
// goroutine handoff less per message on a round trip. The caller holds
// no lock (answer.onSent runs here).
func (c *Conn) flush() {
	if c.raw == nil {
		c.wakeWriter()
		return
	}
	lq := c.lockQueue()
	var total uint64
	for i := range c.outq {
		total += c.outq[i].size
	}
	if c.writing || c.stop || len(c.pending) > 0 || len(c.outq) == 0 || total > maxDirect {
		wake := !c.writing && (c.stop || len(c.pending) > 0 || len(c.outq) > 0)
		lq.unlock()
		if wake {
			c.wakeWriter()
		}
		return
	}
	c.writing = true
	batch := c.outq
	c.outq = c.spare[:0]
	c.spare = nil
	lq.unlock()

	buf := c.dbuf[:0]
	var failed error
	for i := range batch {
		if failed == nil {
			if batch[i].msg == nil {
				buf = append(buf, batch[i].raw...)
				continue
			}
			if c.observe != nil {
				if m, err := rpccp.ReadRootMessage(batch[i].msg); err == nil {
					c.observe(true, m)
				}
			}
			buf, failed = appendFrame(buf, batch[i].msg, batch[i].ext)
		}
		dropOut(batch[i])
		batch[i] = outMsg{}
	}
	c.dbuf = buf
	c.dn = 0
	if failed == nil {
		c.raw.Write(c.direct)
	}
	n := c.dn

	lq = c.lockQueue()
	c.writing = false
	c.outBytes -= total
	if c.outSpace != nil {
		close(c.outSpace)
		c.outSpace = nil
	}
	lq.freeRaws(batch)
	if c.spare == nil {
		c.spare = batch[:0]
	}
	if failed == nil && n < len(buf) {
		c.pending = append(c.pending[:0], buf[n:]...)
	}
	wake := c.stop || len(c.pending) > 0 || len(c.outq) > 0
	lq.unlock()
	if failed != nil {
		c.shutdown(failed, false)
	}
	if wake {
		c.wakeWriter()
	}
}

// freeRaws keeps the raw buffers of batch, written, for reuse, and clears
// batch.
func (c *lockedQueue) freeRaws(batch []outMsg) {
	for i := range batch {
		if batch[i].msg == nil {
			c.freeRawLocked(batch[i].raw)
		}
		batch[i] = outMsg{}
	}
}

func dropOut(m outMsg) {
	if m.msg == nil {
		return // raw bytes
	}
	m.ext.finish()
	if m.sentTo != nil {
		m.sentTo.onSent()
	} else {
		recycleOut(m.msg)
	}
}

// waitQueue waits while the outgoing queue holds more than limit bytes.
func (c *Conn) waitQueue(ctx context.Context, limit uint64) {
	lq := c.lockQueue()
	for c.outBytes > limit && !c.stop {
		if c.outSpace == nil {
			c.outSpace = make(chan struct{})
		}
		ch := c.outSpace
		lq.unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
		lq = c.lockQueue()
	}
	lq.unlock()
}

// waitQueueHard is the reader's back-pressure: it stops reading while
// the messages it caused to be queued exceed twice the queue limit.
func (c *Conn) waitQueueHard() { c.waitQueue(context.Background(), 2*c.lim.maxQueue) }

func (c *Conn) writer() {
	defer close(c.wdone)
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("rpcconn: bug in writer", "panic", r, "stack", string(debug.Stack()))
			c.shutdown(protoErr("internal error: %v", r), false)
			c.closeRWC()
		}
	}()
	bw := bufio.NewWriterSize(c.rwc, 64<<10)
	hdr := make([]byte, frameHeaderSize)
	var failed error
	reported := false
	// grace ends the connection if the reader has not after a write found
	// the peer gone; the writer stops it when it exits, so that it never
	// outlives the connection.
	var grace *time.Timer
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	for {
		lq := c.lockQueue()
		for c.writing || (len(c.outq) == 0 && len(c.pending) == 0 && !c.stop) {
			lq.unlock()
			<-c.wake
			if c.plainOpen.Load() > 1 {
				// Callers waiting for answers: those woken with this
				// goroutine (whose answers the reader just settled)
				// queue their next calls first, for one write for all
				// of them rather than one each. Not for a stream's
				// calls, which one goroutine sends without waiting:
				// yielding only delays them.
				runtime.Gosched()
			}
			lq = c.lockQueue()
		}
		c.writing = true
		pending := c.pending
		c.pending = nil
		batch := c.outq
		c.outq = c.spare[:0]
		c.spare = nil
		stop, abort := c.stop, c.abortMsg
		c.abortMsg = nil
		lq.unlock()

		if len(pending) > 0 && failed == nil {
			// The rest of what flush wrote: it goes first (even when
			// stopping, so that an Abort does not follow half a frame).
			_, failed = bw.Write(pending)
		}
		var n uint64
		for i := range batch {
			n += batch[i].size
			if stop || failed != nil {
				dropOut(batch[i])
			} else if batch[i].msg == nil {
				if _, err := bw.Write(batch[i].raw); err != nil {
					failed = err
				}
			} else {
				if c.observe != nil {
					if m, err := rpccp.ReadRootMessage(batch[i].msg); err == nil {
						c.observe(true, m)
					}
				}
				err := writeFrame(bw, c.rwc, batch[i].msg, batch[i].ext, hdr)
				if err == nil && batch[i].ext != nil {
					err = c.writeExt(bw, batch[i].ext)
				}
				dropOut(batch[i])
				if err != nil {
					failed = err
				}
			}
		}
		if failed == nil && !stop {
			failed = bw.Flush()
		}
		lq = c.lockQueue()
		c.writing = false
		c.outBytes -= n
		if c.outSpace != nil {
			close(c.outSpace)
			c.outSpace = nil
		}
		lq.freeRaws(batch)
		if c.spare == nil {
			c.spare = batch[:0]
		}
		lq.unlock()
		if failed != nil && !stop && !reported {
			reported = true
			if isPeerGone(failed) {
				// The peer closed its end: what it sent first (an
				// Abort saying why) may still be unread. The reader
				// ends the connection with that, or with the end of
				// the stream; if it has not within peerGoneGrace, the
				// write error ends it.
				err := failed
				grace = time.AfterFunc(peerGoneGrace, func() { c.shutdown(err, false) })
			} else {
				c.shutdown(failed, false)
			}
			continue
		}
		if stop {
			if abort != nil && failed == nil {
				if writeFrame(bw, c.rwc, abort, nil, hdr) == nil {
					bw.Flush()
				}
				releaseOut(abort)
			}
			c.closeRWC()
			return
		}
	}
}

// isPeerGone reports whether a stream error means the peer closed or reset.
func isPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}
