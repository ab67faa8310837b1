package rpcconn

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
)

// The reading role. One goroutine at a time reads the connection's
// messages and handles them (c.fr and the buffer under it are its); which
// one changes so that a small call costs no goroutine handoff:
//
//   - the connection's own goroutines (readers, at most one parked as a
//     spare) read while nobody else does, and run each call they deliver
//     (package mp runs its methods there, inline: TakeInline);
//   - a caller waiting for the Return of a direct call (Call.Send) reads
//     it itself when the role is free, or taken by a connection goroutine
//     that is running a delivery (application code: busy); while it reads
//     it handles whatever else comes, as a reader would, but runs no
//     method inline. Once its Return is in, it passes the role on: to
//     another caller waiting, to a spare reader if more is expected
//     (questions open, bytes buffered, the peer calling), back to the
//     delivering goroutine it took the role from, or nobody (free);
//   - a reader that has handed a Return to a caller, with no question
//     left open and the peer quiet, leaves the role free, so that the
//     caller's next call reads its own Return.
//
// Nobody reads while the role is free, or busy (its holder runs
// application code, which may block: the wallet's getBalance waits for
// calls that arrive on the same connection). The spare bounds that: it
// takes the role once it has seen it free or busy for Conn.patience (0.5
// ms), so a message waits unread twice that long at most (a state that
// began while the spare slept on its timer is timed from when it wakes:
// the clock is not read per state), plus the timer's slack (Go's timers
// sleep in whole milliseconds: 1-2 ms in all). It watches with a timer
// only while such states come and go: in a steady stream of calls it
// wakes once per patience, not once per call.
//
// Only one goroutine may wait in the socket's Read. A caller holding the
// role whose call ends otherwise (its context canceled) is pulled out of
// Read with a read deadline in the past (kick), even in the middle of a
// frame (the frame reader goes on where it stopped with the next
// holder); connections whose rwc has no SetReadDeadline never let callers
// read.
//
// role.mu is never held together with c.mu or c.qmu.
type readRole struct {
	mu     sync.Mutex
	state  roleState
	holder *reader
	// since is when the spare first saw the present free or busy
	// state (act tells a new one from the one it saw): the states come
	// and go once per call in a stream, too often to read the clock for
	// each.
	since    time.Time
	sinceAct uint64
	act      uint64    // how many times the state became free or busy
	waiters  []*reader // callers waiting for their Return, in arrival order
	spare    *reader   // a connection goroutine waiting for the role
	// spareTimed: the spare waits with a timer (or was woken to start
	// one); a state becoming free or busy wakes an untimed spare.
	spareTimed bool
	spareSeen  uint64 // act when the spare last looked
	readers    int    // connection goroutines that have not exited
	// spareStarting: a goroutine was started to be the spare and has
	// not looked yet.
	spareStarting bool
	kicked        bool // a read deadline in the past is set (kick)
	closing       bool
	panicked      bool // a reader recovered from a bug

	stats roleStats

	// Touched only by the holder. lastCall is when the holder last
	// found that the peer had called (peerCalling), callSeen whether it
	// has called since: a call costs a store, not a reading of the clock.
	lastCall  time.Time
	callSeen  bool
	sawDirect bool // a direct call's Return was handled
}

// RoleStats counts how a connection's messages were read (see
// readRole), and some of how they were written, for tests and
// benchmarks.
type RoleStats struct {
	OwnReturns  uint64 // Returns of direct calls read by their own caller
	Inline      uint64 // calls run on the goroutine that read them (TakeInline)
	Takeovers   uint64 // times a goroutine took the role after the patience ran out
	HandOffs    uint64 // times the role went to a connection goroutine that had to be woken or started
	Templated   uint64 // Calls and Returns received read from the template of the one before (recvcall.go)
	BareRead    uint64 // bare Returns taken straight from the read buffer behind another (handleBareReturn)
	SenderFlush uint64 // times a stream's sender had its queued calls written itself (streamWriteAt)
	CappedFlush uint64 // times held Returns were written after maxDeferred messages, more being in
}

type roleStats struct {
	ownReturns, inline, takeovers, handOffs, templated, bareRead atomic.Uint64
	senderFlush, cappedFlush                                     atomic.Uint64
}

// RoleStats returns the connection's counts so far.
func (c *Conn) RoleStats() RoleStats {
	s := &c.role.stats
	return RoleStats{
		OwnReturns: s.ownReturns.Load(),
		Inline:     s.inline.Load(),
		Takeovers:  s.takeovers.Load(),
		HandOffs:   s.handOffs.Load(),
		Templated:  s.templated.Load(),
		BareRead:   s.bareRead.Load(),

		SenderFlush: s.senderFlush.Load(),
		CappedFlush: s.cappedFlush.Load(),
	}
}

type roleState uint8

const (
	roleFree    roleState = iota // nobody reads
	roleReading                  // the holder reads, or handles a message
	roleBusy                     // the holder, a connection goroutine, runs a delivery
)

// defaultReadPatience is the longest the role stays free or busy before a
// connection goroutine takes it (Conn.patience): what a message may wait
// unread.
const defaultReadPatience = 500 * time.Microsecond

// A reader is a goroutine that may hold the role: one of the
// connection's (call == nil) or a caller waiting for call's Return.
type reader struct {
	wake chan struct{} // capacity 1: the role was handed over, the call settled, or the end
	call *Call

	// Guarded by role.mu.
	parked     bool // in role.waiters, or role.spare
	delivering bool // a connection goroutine in a delivery
	lost       bool // it lost the role during its delivery (its own field)
	timer      *time.Timer
}

func newReader() *reader { return &reader{wake: make(chan struct{}, 1)} }

func (w *reader) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// errYield is the frame reader's error when its holder, a caller whose
// call has ended, was pulled out of Read (a kick).
var errYield = errors.New("rpcconn: reader yields")

// kickReader is the io.Reader under the frame reader's buffer: rwc, and
// the end of a Read cut short by a kick. The frame reader loses nothing
// when it returns errYield (frameReader.next).
type kickReader struct {
	c      *Conn
	holder *reader // the goroutine reading; touched only by it
}

func (k *kickReader) Read(p []byte) (int, error) {
	for {
		n, err := k.c.rwc.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		r := &k.c.role
		lr := k.c.lockRole()
		if !r.kicked {
			lr.unlock()
			return n, err
		}
		lr.unkickLocked()
		yield := k.holder.call != nil && k.holder.call.settled.Load()
		lr.unlock()
		if yield {
			return 0, errYield
		}
	}
}

var longAgo = time.Unix(1, 0)

// kickLocked pulls the holder out of Read.
func (c *lockedRole) kickLocked() {
	r := &c.role
	if r.kicked || c.deadline == nil {
		return
	}
	r.kicked = true
	c.deadline.SetReadDeadline(longAgo)
}

// unkickLocked clears a kick.
func (c *lockedRole) unkickLocked() {
	r := &c.role
	if r.kicked {
		r.kicked = false
		c.deadline.SetReadDeadline(time.Time{})
	}
}

// next reads the next message as w, which holds the role. Returns whose
// writing waited for the messages that were already in (deferKick) are
// written first unless the next one is too, and at least once every
// maxDeferred messages.
func (c *Conn) next(w *reader) (*capnp.Message, uint64, error) {
	c.kr.holder = w
	if c.flushDue.Load() {
		c.deferredFor++
		buffered := c.frameBuffered()
		if (!buffered || c.deferredFor >= maxDeferred) && c.flushDue.Swap(false) {
			if buffered {
				c.role.stats.cappedFlush.Add(1)
			}
			c.flush()
		}
	}
	return c.fr.next()
}

// maxDeferred is the most messages handled while Returns wait to be
// written (deferKick). A peer streaming to us has a window of calls in
// flight, and counts a call in it until its Return arrives: Returns held
// until the whole read buffer (hundreds of a stream's calls) is handled
// would empty our side of the window before the peer learns it has room,
// and the two sides would take turns rather than work at once.
const maxDeferred = 64

// frameBuffered reports whether the whole of the next frame has been read
// already; only the holder may ask.
func (c *Conn) frameBuffered() bool {
	br := c.fr.br
	if br == nil || c.fr.pending {
		return false
	}
	n := br.Buffered()
	if n < 8 {
		return false
	}
	b, _ := br.Peek(n)
	nseg := uint64(binary.LittleEndian.Uint32(b)) + 1
	hlen := 4 + 4*nseg
	if hlen%8 != 0 {
		hlen += 4
	}
	if uint64(n) < hlen {
		return false
	}
	total := hlen
	for i := uint64(0); i < nseg; i++ {
		total += 8 * uint64(binary.LittleEndian.Uint32(b[4+4*i:]))
	}
	return uint64(n) >= total
}

// deferKick is for a Return that the goroutine queueing it would write
// (Conn.kick): if the call ran inline on the goroutine reading, and the
// next message is in already, the write waits until the messages in have
// been handled (next), so that the Returns of calls that came together
// leave together, in one write. It reports whether it deferred.
func (a *answer) deferKick() bool {
	c := a.c
	r := &c.role
	lr := c.lockRole()
	defer lr.unlock()
	w := a.ctx.by
	if w == nil || r.holder != w || r.state != roleBusy || !c.frameBuffered() {
		return false
	}
	if !c.flushDue.Swap(true) {
		c.deferredFor = 0
	}
	return true
}

// buffered reports whether bytes of the next message have been read
// already; only the holder may ask.
func (c *Conn) buffered() bool {
	return c.fr.pending || c.fr.br != nil && c.fr.br.Buffered() > 0
}

// peerCallWindow is how long after the peer's last call (or bootstrap
// or disembargo: what the peer waits on us for) a connection goroutine
// keeps reading rather than leaving the role to callers: while the peer
// calls us, its calls are read at once, not after the role's patience.
// Much longer than the patience, so that two peers calling each other in
// turn do not each leave the role free just before the other's call.
const peerCallWindow = 100 * time.Millisecond

// peerCalling reports whether the peer has called lately; only the
// holder may ask.
func (c *Conn) peerCalling() bool {
	r := &c.role
	if r.callSeen {
		// The calls seen since the last look are dated now: later
		// than they came by at most the time between two looks (a
		// Return handed to a caller, the role passed on).
		r.callSeen = false
		r.lastCall = time.Now()
		return true
	}
	return !r.lastCall.IsZero() && time.Since(r.lastCall) < peerCallWindow
}

// watchLocked notes that the role became free or busy, and wakes an
// untimed spare, or starts one if there is none, so that the free or busy
// state just entered is watched.
func (c *lockedRole) watchLocked() {
	r := &c.role
	r.act++
	switch {
	case r.spare != nil:
		if !r.spareTimed {
			r.spareTimed = true
			r.spare.signal()
		}
	case !r.closing && !r.spareStarting:
		r.spareStarting = true
		c.startReaderLocked(nil)
	}
}

// startReaderLocked starts a connection goroutine that reads; with w, it
// holds the role from the start.
func (c *lockedRole) startReaderLocked(w *reader) {
	if w == nil {
		w = newReader()
	}
	c.role.readers++
	go c.conn().readLoop(w)
}

// handToSpareLocked gives the role to a connection goroutine (the spare,
// or a new one). The role is the caller's to give.
func (c *lockedRole) handToSpareLocked() {
	r := &c.role
	r.stats.handOffs.Add(1)
	r.state = roleReading
	if s := r.spare; s != nil {
		r.spare = nil
		s.parked = false
		r.holder = s
		s.signal()
		return
	}
	w := newReader()
	r.holder = w
	c.startReaderLocked(w)
}

// readLoop is a connection goroutine that reads: it waits for the role
// (awaitRole), reads while it holds it (readTop), and exits when the
// connection ends or another goroutine is the spare already. The last
// one to exit ends the connection (finish).
func (c *Conn) readLoop(w *reader) {
	defer c.readerExit()
	defer func() {
		if v := recover(); v != nil {
			c.bug(v)
		}
	}()
	for c.awaitRole(w) {
		if !c.readTop(w) {
			return
		}
	}
}

// readerExit ends a connection goroutine; the last one ends the
// connection once it has ended.
func (c *Conn) readerExit() {
	// c.closing, not r.closing: a goroutine that saw the end (its read
	// failed) may exit before shutdown, run by another, got to the role.
	lc := c.lock()
	closing := c.closing
	lc.unlock()
	r := &c.role
	lr := c.lockRole()
	r.readers--
	last := r.readers == 0 && closing
	panicked := r.panicked
	lr.unlock()
	if last {
		c.finish(panicked)
	}
}

// awaitRole waits until w holds the role and reports true, or reports
// false when w should exit: the connection is ending, or another
// goroutine waits as the spare.
func (c *Conn) awaitRole(w *reader) bool {
	r := &c.role
	lr := c.lockRole()
	defer lr.unlock()
	for {
		// Whichever goroutine was on its way to be the spare, one is
		// here: it becomes the spare, or there is one, or it reads
		// and whoever needs a spare next starts one.
		r.spareStarting = false
		if r.closing {
			if r.spare == w {
				r.spare, w.parked = nil, false
			}
			return false
		}
		if r.holder == w {
			return true
		}
		if r.spare != nil && r.spare != w {
			return false
		}
		r.spare, w.parked = w, true
		wait := time.Duration(-1)
		switch r.state {
		case roleFree, roleBusy:
			// A state entered since the spare last looked began no
			// later than now: it waits a whole patience from now at
			// most (twice the patience in all, when it slept on its
			// timer through the change).
			now := time.Now()
			if r.sinceAct != r.act {
				r.since, r.sinceAct = now, r.act
			}
			d := c.patience - now.Sub(r.since)
			if d <= 0 {
				// Nobody has read for c.patience: take over. A busy
				// holder finds it lost the role when its delivery ends.
				r.spare, w.parked = nil, false
				r.holder, r.state = w, roleReading
				r.stats.takeovers.Add(1)
				return true
			}
			wait = d
		default:
			if r.act != r.spareSeen {
				// Free and busy states come and go: keep watching.
				wait = c.patience
			}
		}
		r.spareSeen = r.act
		r.spareTimed = wait >= 0
		lr.unlock()
		if wait >= 0 {
			if w.timer == nil {
				w.timer = time.NewTimer(wait)
			} else {
				w.timer.Reset(wait)
			}
			select {
			case <-w.wake:
				w.timer.Stop()
			case <-w.timer.C:
			}
		} else {
			<-w.wake
		}
		lr = c.lockRole()
	}
}

// readTop reads and handles messages as w, a connection goroutine
// holding the role, until it lets the role go or loses it (true), or the
// connection ends (false).
func (c *Conn) readTop(w *reader) bool {
	r := &c.role
	for {
		msg, size, err := c.next(w)
		if err != nil {
			var pe *ProtocolError
			c.shutdown(err, errors.As(err, &pe))
			return false
		}
		if err := c.handle(w, msg, size); err != nil {
			var pe *ProtocolError
			c.shutdown(err, errors.As(err, &pe) && !pe.Remote)
			return false
		}
		if w.lost {
			w.lost = false
			return true
		}
		c.waitQueueHard()
		if r.sawDirect {
			r.sawDirect = false
			if c.yieldTop(w) {
				c.flushDeferred()
				return true
			}
		}
	}
}

// yieldTop lets the role go after w, a connection goroutine, handed a
// Return to a caller, if the peer seems to send nothing but Returns (no byte
// buffered, no call from the peer lately): to a caller waiting for its own
// Return, or, with no question open, to nobody, so that the caller's
// next call reads its own Return. It reports whether w let go.
func (c *Conn) yieldTop(w *reader) bool {
	if c.deadline == nil || c.buffered() || c.peerCalling() {
		return false
	}
	r := &c.role
	lr := c.lockRole()
	defer lr.unlock()
	if r.holder != w || r.closing {
		return false
	}
	if lr.passToWaiterLocked() {
		return true
	}
	if c.openQ.Load() > 0 {
		return false
	}
	r.holder, r.state = nil, roleFree
	if r.spare == nil {
		// w is on its way to be the spare (awaitRole): no need for
		// another.
		r.spareStarting = true
	}
	lr.watchLocked()
	return true
}

// passToWaiterLocked hands the role to the first caller waiting for a
// Return that has not come, if any, and reports whether it did. The role
// is the caller's to give.
func (c *lockedRole) passToWaiterLocked() bool {
	r := &c.role
	for len(r.waiters) > 0 {
		x := r.waiters[0]
		copy(r.waiters, r.waiters[1:])
		r.waiters[len(r.waiters)-1] = nil
		r.waiters = r.waiters[:len(r.waiters)-1]
		x.parked = false
		if !x.call.settled.Load() {
			r.holder, r.state = x, roleReading
			x.signal()
			return true
		}
	}
	return false
}

// enterBusy notes that w, a connection goroutine holding the role, runs
// x's call inline (application code), and reports whether it may.
func (c *Conn) enterBusy(w *reader, x *callCtx) bool {
	r := &c.role
	lr := c.lockRole()
	defer lr.unlock()
	if r.holder != w || r.state != roleReading {
		return false
	}
	w.delivering = true
	r.state = roleBusy
	x.by = w
	lr.watchLocked()
	r.stats.inline.Add(1)
	return true
}

// leaveBusy notes that w's inline call is over; w.lost says whether it
// lost the role meanwhile.
func (c *Conn) leaveBusy(w *reader, x *callCtx) {
	r := &c.role
	lr := c.lockRole()
	w.delivering = false
	x.by = nil
	if r.holder == w {
		r.state = roleReading
	} else {
		w.lost = true
	}
	lr.unlock()
}

// handOff gives the role away now if x's call is being delivered inline
// by the goroutine holding it, busy: that goroutine is about to wait for
// something else (an outgoing call on another connection).
func (c *Conn) handOff(x *callCtx) {
	r := &c.role
	lr := c.lockRole()
	if w := x.by; w != nil && r.holder == w && r.state == roleBusy && !r.closing {
		lr.handToSpareLocked()
	}
	lr.unlock()
}

// awaitReturn waits for dc's Return, reading it itself when it can.
func (c *Conn) awaitReturn(dc *Call) {
	r := &c.role
	w := &dc.rd
	lr := c.lockRole()
	for {
		if r.holder == w {
			// Handed over (perhaps just as the call ended otherwise:
			// readFor passes the role on then). readFor may also stop
			// before the call has settled: at the end, which another
			// goroutine may be running (shutdown settles the call).
			lr.unlock()
			c.readFor(dc, nil)
			lr = c.lockRole()
			continue
		}
		if dc.settled.Load() {
			if w.parked {
				lr.unparkLocked(w)
			}
			lr.unlock()
			return
		}
		if c.deadline != nil && !r.closing && (r.state == roleFree || r.state == roleBusy) {
			var prev *reader
			if r.state == roleBusy {
				prev = r.holder
			}
			if w.parked {
				lr.unparkLocked(w)
			}
			r.holder, r.state = w, roleReading
			lr.unlock()
			c.readFor(dc, prev)
			lr = c.lockRole()
			continue
		}
		if !w.parked {
			w.parked = true
			r.waiters = append(r.waiters, w)
		}
		lr.unlock()
		<-w.wake
		lr = c.lockRole()
	}
}

// unparkLocked takes w out of role.waiters.
func (c *lockedRole) unparkLocked(w *reader) {
	r := &c.role
	w.parked = false
	for i, x := range r.waiters {
		if x == w {
			copy(r.waiters[i:], r.waiters[i+1:])
			r.waiters[len(r.waiters)-1] = nil
			r.waiters = r.waiters[:len(r.waiters)-1]
			return
		}
	}
}

// readFor reads and handles messages as dc's caller, which holds the
// role, until dc has settled; then it passes the role on. prev is the
// connection goroutine it took the role from in the middle of a
// delivery, if any.
func (c *Conn) readFor(dc *Call, prev *reader) {
	w := &dc.rd
	defer c.passRole(w, prev)
	defer func() {
		if v := recover(); v != nil {
			c.bug(v)
			if !dc.settled.Load() {
				// The end failed every call still open; this one
				// was being settled here when the bug struck.
				lc := c.lock()
				dc.err = c.discErr
				lc.unlock()
				dc.signalSettled(false)
			}
		}
	}()
	for !dc.settled.Load() {
		msg, size, err := c.next(w)
		if err == errYield {
			return
		}
		if err != nil {
			var pe *ProtocolError
			c.shutdown(err, errors.As(err, &pe))
			// Another goroutine may be running the end already
			// (shutdown returned at once): nobody reads from now on.
			c.closeRole()
			return
		}
		if err := c.handle(w, msg, size); err != nil {
			var pe *ProtocolError
			c.shutdown(err, errors.As(err, &pe) && !pe.Remote)
			c.closeRole()
			return
		}
		if !dc.settled.Load() {
			c.waitQueueHard()
		}
	}
}

// passRole passes the role on from w, a caller whose call has settled
// (see readRole).
func (c *Conn) passRole(w *reader, prev *reader) {
	c.passRoleLocked(w, prev)
	c.flushDeferred()
}

// flushDeferred writes the Returns deferKick left, if any: the goroutine
// letting the role go does, as it may not have called next again.
func (c *Conn) flushDeferred() {
	if c.flushDue.Load() && c.flushDue.Swap(false) {
		c.flush()
	}
}

func (c *Conn) passRoleLocked(w *reader, prev *reader) {
	r := &c.role
	lr := c.lockRole()
	defer lr.unlock()
	lr.unkickLocked()
	r.sawDirect = false
	if r.holder != w {
		return
	}
	if r.closing {
		r.holder, r.state = nil, roleFree
		return
	}
	if lr.passToWaiterLocked() {
		return
	}
	if c.openQ.Load() > 0 || c.buffered() || c.peerCalling() {
		lr.handToSpareLocked()
		return
	}
	if prev != nil && prev.delivering {
		r.holder, r.state = prev, roleBusy
		lr.watchLocked()
		return
	}
	r.holder, r.state = nil, roleFree
	lr.watchLocked()
}

// signalSettled wakes dc's caller, if it waits, once dc has settled;
// with kick (the call ended otherwise than by its Return), it pulls the
// caller out of Read if it holds the role. It is the last the
// connection does with dc until its caller releases it.
func (dc *Call) signalSettled(kick bool) {
	c := dc.c
	r := &c.role
	lr := c.lockRole()
	dc.settled.Store(true)
	if dc.rd.parked {
		dc.rd.signal()
	}
	if kick && r.holder == &dc.rd {
		lr.kickLocked()
	}
	lr.unlock()
}

// closeRole notes the connection's end: spares exit, and a caller
// reading is pulled out of Read.
func (c *Conn) closeRole() {
	r := &c.role
	lr := c.lockRole()
	r.closing = true
	if s := r.spare; s != nil {
		s.signal()
	}
	if h := r.holder; h != nil && h.call != nil {
		lr.kickLocked()
	}
	lr.unlock()
}

var _ io.Reader = (*kickReader)(nil)

// finish ends the connection once the last of its reading goroutines has
// exited: it closes done once the writer has exited and the calls it
// delivered have returned (after a bug, it does not wait for those: a
// call being delivered then may never return).
func (c *Conn) finish(panicked bool) {
	<-c.wdone
	lc := c.lock()
	idle := c.idle
	if c.active == 0 || panicked {
		idle = nil
	}
	lc.unlock()
	if idle != nil {
		<-idle
	}
	close(c.done)
}

// stateBug ends the connection on a transition the state tables refused
// (states.go), a bug of this package found by whichever goroutine made it
// (a reader or a caller), with the stack logged. Unlike bug, nothing
// panicked: the calls being delivered still return, and the end waits
// for them as usual.
func (c *Conn) stateBug(err error) {
	c.log.Error("rpcconn: bug: refused state transition", "err", err, "stack", string(debug.Stack()))
	c.shutdown(protoErr("internal error: %v", err), true)
}

// bug turns a panic in a reading goroutine into an aborted connection,
// with the stack logged.
func (c *Conn) bug(v any) {
	r := &c.role
	lr := c.lockRole()
	r.panicked = true
	lr.unlock()
	c.log.Error("rpcconn: bug in reader", "panic", v, "stack", string(debug.Stack()))
	c.shutdown(protoErr("internal error: %v", v), true)
}
