package rpcconn

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// An answer is the callee's side of a call or bootstrap request from the
// peer. It is the call's capnp.Returner. It stays in c.answers until its
// Return has been queued and the peer's Finish has arrived.
type answer struct {
	c    *Conn
	id   uint32
	size uint64 // bytes of the call message, counted in c.aBytes until Return
	ctx  callCtx
	// args is the call message until releaseArgs takes it.
	args atomic.Pointer[capnp.Message]
	// inReader: the goroutine that delivers the call (the reader, or
	// one handing on pipelined calls) is inside the capability's Recv,
	// where Return must not wait for room in the outgoing queue.
	inReader atomic.Bool

	// Touched only by the goroutine returning the call, before Return.
	ret     *capnp.Message // the Return message, once allocated
	retHdr  rpccp.Return   // its Return struct, if AllocResults made it
	payload rpccp.Payload
	content capnp.Ptr
	alloced bool
	err     error
	// ext holds the Return's lent segments (lend.go); keepArgs says
	// that one of them lies in the parameters, which are then released
	// once the writer is done with it (extQueued: ext.onDone does), not
	// when the call returns.
	ext       *outExt
	keepArgs  bool
	extQueued bool

	// Guarded by c.mu.
	state answerState // states.go
	msg   answerMsg   // what became of ret (states.go)
	tail  answerTail  // where the results go: tail calls (yourself.go, states.go)
	// finished: the peer's Finish arrived. An event of the peer's that
	// may come in any state but aRemoved (before the Return it cancels
	// the call), so a flag beside the state; releaseCaps is what it said.
	finished    bool
	releaseCaps bool
	resultCaps  []uint32 // exports made for the results
	pipeline    []pendingCall
	waiters     []*answerHook // capabilities the peer named by receiverAnswer
	resultErr   error         // the call's error, once returned
	taker       *question     // the question taking the results (tailTaken), until they are ready
}

// A pendingCall is a call on a promised answer that has not returned.
type pendingCall struct {
	a         *answer         // the call's own answer; nil for a call from elsewhere
	ctx       context.Context // for a call from elsewhere
	transform []capnp.PipelineOp
	recv      capnp.Recv
	fn        func() // instead of a call: a Disembargo reply, in order

	held *heldCall // for a call from elsewhere: its PipelineCaller meanwhile
}

// fail returns err for a call that will not be delivered.
func (p pendingCall) fail(err error) {
	switch {
	case p.a != nil:
		p.a.reject(err)
	case p.fn == nil:
		p.recv.Reject(err)
		p.held.settle(nil, err)
	}
}

// An answerHook is a capability the peer named by receiverAnswer: a
// capability in the results of one of its calls to us that has not
// returned yet. Calls wait in the answer's queue, behind the calls the
// peer pipelined on it, and the promise resolves once they are handed on.
type answerHook struct {
	a         *answer
	transform []capnp.PipelineOp
	resolver  capnp.Resolver[capnp.Client]
	done      chan struct{} // closed once res or err is set
	res       capnp.Client
	err       error

	mu   sync.Mutex
	shut bool // Shutdown ran: settle releases res itself
}

func (h *answerHook) settle(cl capnp.Client, err error) {
	h.mu.Lock()
	h.res, h.err = cl, err
	close(h.done)
	shut := h.shut
	h.mu.Unlock()
	if err != nil {
		h.resolver.Reject(err)
	} else {
		h.resolver.Fulfill(cl)
	}
	if shut {
		// The promise lost its last reference before it resolved.
		cl.Release()
	}
}

func (h *answerHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	select {
	case <-h.done:
	case <-ctx.Done():
		return capnp.ErrorAnswer(s.Method, ctx.Err()), func() {}
	}
	if h.err != nil {
		return capnp.ErrorAnswer(s.Method, h.err), func() {}
	}
	return h.res.SendCall(ctx, s)
}

func (h *answerHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	c := h.a.c
	lc := c.lock()
	if (h.a.state == aRunning || h.a.state == aDraining) && !c.closing {
		held := hold(&r)
		h.a.pipeline = append(h.a.pipeline, pendingCall{ctx: ctx, transform: h.transform, recv: r, held: held})
		lc.unlock()
		return held
	}
	lc.unlock()
	// Returned: settle runs right after, in the returning goroutine.
	<-h.done
	if h.err != nil {
		r.Reject(h.err)
		return failedCaller{h.err}
	}
	return orFailed(h.res.RecvCall(ctx, r))
}

func (h *answerHook) Brand() capnp.Brand { return capnp.Brand{Value: h} }
func (h *answerHook) String() string     { return "rpcconn promised answer" }
func (h *answerHook) Shutdown() {
	h.mu.Lock()
	h.shut = true
	var res capnp.Client
	select {
	case <-h.done:
		res = h.res
	default:
	}
	h.mu.Unlock()
	res.Release()
}

// takeWaiters resolves, under c.mu, what the answerHooks waiting for a
// resolve to; the caller settles them after unlocking.
func (a *answer) takeWaiters(lc *lockedConn) []waiterResult {
	if len(a.waiters) == 0 {
		return nil
	}
	out := make([]waiterResult, len(a.waiters))
	for i, h := range a.waiters {
		cl, err := a.target(lc, h.transform)
		out[i] = waiterResult{h, cl, err}
	}
	a.waiters = nil
	return out
}

type waiterResult struct {
	h   *answerHook
	cl  capnp.Client
	err error
}

func settleAll(ws []waiterResult) {
	for _, w := range ws {
		w.h.settle(w.cl, w.err)
	}
}

// noRelease is the ReleaseArgs of the calls the connection delivers.
func noRelease() {}

// releaseArgs releases the call's parameters; Return does.
func (a *answer) releaseArgs() {
	if msg := a.args.Swap(nil); msg != nil {
		recycleRecv(msg)
	}
}

// AllocResults implements capnp.Returner.
func (a *answer) AllocResults(sz capnp.ObjectSize) (capnp.Struct, error) {
	if a.alloced {
		return capnp.Struct{}, errors.New("rpcconn: AllocResults called twice")
	}
	a.alloced = true
	if t := retTemplateFor(sz); t != nil {
		if msg, ret, pay, st, ok := t.build(a.id, sz); ok {
			a.ret, a.retHdr, a.payload, a.content = msg, ret, pay, st.ToPtr()
			return st, nil
		}
	}
	msg, ret, pay, st, err := buildReturn(a.id, sz)
	a.ret, a.retHdr, a.payload = msg, ret, pay
	if err != nil {
		return capnp.Struct{}, err
	}
	a.content = st.ToPtr()
	return st, nil
}

// PrepareReturn implements capnp.Returner.
func (a *answer) PrepareReturn(e error) { a.err = e }

// ReleaseResults implements capnp.Returner. The connection owns the
// results message from Return on, for pipelined calls.
func (a *answer) ReleaseResults() {}

// reject returns err for the call.
func (a *answer) reject(err error) {
	a.PrepareReturn(err)
	a.Return()
}

func (a *answer) exceptionMessage(err error) *capnp.Message {
	msg, root := newMessage()
	ret, _ := root.NewReturn()
	ret.SetAnswerId(a.id)
	ret.SetReleaseParamCaps(false)
	e, _ := ret.NewException()
	toException(e, err)
	return msg
}

// Return implements capnp.Returner: it queues the Return message and then
// delivers the pipelined calls that were waiting for it, in order.
func (a *answer) Return() {
	c := a.c
	if a.keepArgs {
		// Released after the Return is written, or below if it is not
		// sent after all.
		defer func() {
			if !a.extQueued {
				a.releaseArgs()
			}
		}()
	} else {
		a.releaseArgs()
	}
	if !a.inReader.Load() {
		c.waitQueue(&a.ctx, c.lim.maxQueue)
	}
	// Results nobody allocated are empty: such a Return is written from
	// a template (bareReturn), unless more than a Return is needed of it
	// (below) or the call log reads every message (Observe).
	bareOK := a.err == nil && !a.alloced && c.observe == nil
	if a.err == nil && !a.alloced && !bareOK {
		if _, err := a.AllocResults(capnp.ObjectSize{}); err != nil {
			a.err = err
		}
	}
	var drop []*capnp.Message
	var release []capnp.Client
	lc := c.lock()
	c.active--
	c.aBytes -= a.size
	if c.active == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	if c.closing || a.state.removed() {
		if !a.state.removed() {
			a.to(lc, aReturned)
		}
		a.toMsg(lc, msgReleased)
		tk := a.failTaker(lc)
		lc.unlock()
		tk.run()
		a.ctx.cancel()
		if a.ret != nil {
			releaseOut(a.ret)
		}
		return
	}
	bare := bareOK && a.tail == tailNone && !a.finished && len(a.pipeline) == 0 && len(a.waiters) == 0
	if bareOK && !bare {
		// Calls pipelined on the results, or a tail call: they need a
		// results message.
		if _, err := a.AllocResults(capnp.ObjectSize{}); err != nil {
			a.err = err
		}
	}
	var out *capnp.Message
	switch {
	case bare:
		// out stays nil: sendReturn queues the template.
	case a.tail != tailNone:
		out = a.keepResults(lc, &drop)
	case a.finished && len(a.pipeline) == 0:
		// The caller canceled: it wants no results, so export nothing.
		// (With calls pipelined on them the results are still needed:
		// they are returned as usual, and their capabilities released
		// as the Finish asked once the pipelined calls are handed on.)
		if a.ret != nil {
			drop = append(drop, a.ret)
		}
		a.ret = nil
		a.resultErr = errCanceled
		msg, root := newMessage()
		ret, _ := root.NewReturn()
		ret.SetAnswerId(a.id)
		ret.SetReleaseParamCaps(false)
		ret.SetCanceled()
		out = msg
	case a.err != nil:
		if a.ret != nil {
			drop = append(drop, a.ret)
		}
		a.ret = nil
		a.resultErr = a.err
		out = a.exceptionMessage(a.err)
	default:
		ids, err := lc.describeCaps(a.payload, a.ret.CapTable(), &release)
		if err != nil {
			drop = append(drop, a.ret)
			a.ret = nil
			a.resultErr = err
			out = a.exceptionMessage(err)
			break
		}
		a.resultCaps = ids
		out = a.ret
	}
	pending := a.pipeline
	a.pipeline = nil
	// Results without capabilities need no Finish: nothing can be
	// pipelined on them or released. The answer is forgotten at once
	// (a peer that does not know the flag still sends a Finish, which is
	// then dropped), and the results are released once written.
	noFinish := bare || (out == a.ret && a.retHdr.IsValid() && len(pending) == 0 && len(a.waiters) == 0 &&
		!a.finished && a.ret.CapTable().Len() == 0)
	if noFinish && !bare {
		a.retHdr.SetNoFinishNeeded(true)
	}
	// With other calls being served, more Returns follow: the writer
	// batches them.
	direct := c.active == 0
	var kick bool
	var waiters []waiterResult
	if len(pending) > 0 {
		// The Return goes out once the calls pipelined on a are handed
		// on (below): a call the peer makes on a result capability once
		// it has seen the Return must not overtake them.
		a.to(lc, aDraining)
	} else {
		a.to(lc, aReturned)
		waiters = a.takeWaiters(lc)
		kick = a.sendReturn(lc, out)
	}
	tk := a.takeResults(lc)
	var done bool
	if a.finished && a.state != aDraining {
		lc.removeAnswer(a)
		done = true
	} else if noFinish {
		lc.removeAnswer(a)
		if c.finishOptional.len() < c.lim.maxTable {
			c.finishOptional.add(a.id)
		} else {
			c.finishOverflow = true
		}
		done = true
	}
	lc.unlock()
	if kick {
		if !a.deferKick() {
			c.kick(direct)
		}
		kick = false
	}
	tk.run()
	settleAll(waiters)
	for _, m := range drop {
		releaseOut(m)
	}
	for _, cl := range release {
		cl.Release()
	}
	for len(pending) > 0 {
		for _, p := range pending {
			a.deliverPipelined(p)
		}
		var m *capnp.Message
		lc = c.lock()
		pending = a.pipeline
		a.pipeline = nil
		var waiters []waiterResult
		if len(pending) == 0 {
			if a.state == aDrainingRemoved {
				a.to(lc, aRemoved)
			} else {
				a.to(lc, aReturned)
			}
			kick = a.sendReturn(lc, out)
			waiters = a.takeWaiters(lc)
			if a.finished && !a.state.removed() && !c.closing {
				lc.removeAnswer(a)
				done = true
			} else {
				// A Finish or the end came while draining.
				m = a.releasableMsg(lc, c.closing)
			}
		}
		lc.unlock()
		settleAll(waiters)
		if m != nil {
			releaseOut(m)
		}
	}
	if kick {
		c.kick(direct)
	}
	if done {
		a.finishCleanup()
	}
	if !done {
		a.ctx.cancel()
	}
}

// sendReturn queues the Return message out and reports whether the caller
// must then have it written (Conn.enqueue).
func (a *answer) sendReturn(lc *lockedConn, out *capnp.Message) (kick bool) {
	c := a.c
	if out == nil {
		// Empty results (bare): nothing to release after.
		a.toMsg(lc, msgReleased)
		return c.enqueueBare(a.id)
	}
	if out == a.ret {
		if c.closing {
			// Not written: the message is released with the answer.
			a.toMsg(lc, msgWritten)
			return false
		}
		if a.ext != nil && a.keepArgs {
			a.ext.onDone = a.releaseArgs
			a.extQueued = true
		}
		return c.enqueueExt(out, a, a.ext)
	}
	if a.tail == tailNone {
		a.toMsg(lc, msgReleased)
	}
	return c.enqueue(out, nil)
}

var errCanceled = exc.New(exc.Failed, "rpcconn", "call canceled by the caller")

var errNotCapability = exc.New(exc.Failed, "rpcconn", "pipelined call on a field that is not a capability")

// onSent runs in the writer once the Return message is written or dropped.
func (a *answer) onSent() {
	c := a.c
	lc := c.lock()
	a.toMsg(lc, msgWritten)
	m := a.releasableMsg(lc, c.closing)
	lc.unlock()
	if m != nil {
		recycleOut(m)
	}
}

// releasableMsg returns the Return message if nothing needs it any more,
// marking it released.
func (a *answer) releasableMsg(lc *lockedConn, closing bool) *capnp.Message {
	if a.msg != msgWritten || a.state.draining() || !(a.finished || closing || a.state.removed()) {
		return nil
	}
	a.toMsg(lc, msgReleased)
	m := a.ret
	a.ret = nil
	return m
}

// removeAnswer takes a out of the table; the caller calls a.finishCleanup
// after unlocking.
func (c *lockedConn) removeAnswer(a *answer) {
	delete(c.answers, a.id)
	if a.state == aDraining {
		a.to(c, aDrainingRemoved)
	} else {
		a.to(c, aRemoved)
	}
}

// finishCleanup releases what a finished answer held: the result caps if
// the Finish asked for it, and the Return message once written.
func (a *answer) finishCleanup() {
	c := a.c
	var release []capnp.Client
	lc := c.lock()
	if a.releaseCaps && !c.closing {
		for _, id := range a.resultCaps {
			if cl, err := lc.releaseExport(id, 1); err == nil && cl.IsValid() {
				release = append(release, cl)
			}
		}
	}
	a.resultCaps = nil
	m := a.releasableMsg(lc, c.closing)
	lc.unlock()
	a.ctx.cancel()
	if m != nil {
		recycleOut(m)
	}
	for _, cl := range release {
		cl.Release()
	}
}

// target returns the capability at transform in a's results (a new
// reference), or the error a call on it fails with. a has returned or is
// draining. c.mu, held, keeps the results message from being released
// under it (releasableMsg marks it under c.mu first); nothing here calls
// into a hook.
func (a *answer) target(lc *lockedConn, transform []capnp.PipelineOp) (capnp.Client, error) {
	if a.resultErr != nil {
		return capnp.Client{}, a.resultErr
	}
	if a.msg == msgReleased || a.ret == nil {
		return capnp.Client{}, disconnected(errors.New("results already released"))
	}
	p, err := capnp.Transform(a.content, transform)
	if err != nil {
		return capnp.Client{}, exc.WrapError("pipelined call", err)
	}
	iface := p.Interface()
	if !p.IsValid() || !iface.IsValid() {
		return capnp.Client{}, errNotCapability
	}
	cl := iface.Client()
	if !cl.IsValid() {
		return capnp.Client{}, exc.New(exc.Failed, "rpcconn", "pipelined call on a null capability")
	}
	return cl.AddRef(), nil
}

func (a *answer) deliverPipelined(p pendingCall) {
	if p.fn != nil {
		p.fn()
		return
	}
	lc := a.c.lock()
	cl, err := a.target(lc, p.transform)
	lc.unlock()
	if err != nil {
		p.fail(err)
		return
	}
	if p.a != nil {
		p.a.deliver(nil, cl, p.recv)
	} else {
		p.held.settle(cl.RecvCall(p.ctx, p.recv), nil)
	}
	cl.Release()
}

// deliverSnapshot hands the call to the hook of snap, which is e's own
// if e is not nil: it then ends the delivery (export.doneDelivering) and
// returns the snapshot to release, if any. w is the goroutine that reads
// (see deliver). The caller holds no lock.
func (a *answer) deliverSnapshot(w *reader, snap capnp.ClientSnapshot, r capnp.Recv, e *export) capnp.ClientSnapshot {
	a.inReader.Store(true)
	if w != nil && w.call == nil {
		a.ctx.inline = w
		snap.Recv(&a.ctx, r)
		a.endInline(w)
	} else {
		snap.Recv(&a.ctx, r)
	}
	a.inReader.Store(false)
	if e == nil {
		return capnp.ClientSnapshot{}
	}
	c := a.c
	lc := c.lock()
	rel := e.doneDelivering(lc)
	lc.unlock()
	return rel
}

// deliver hands the call to cl. w is the goroutine that read the call,
// or nil: a connection goroutine lets the capability run the call inline
// (TakeInline); a caller reading for its own Return does not. The caller
// holds no lock.
func (a *answer) deliver(w *reader, cl capnp.Client, r capnp.Recv) {
	a.inReader.Store(true)
	if w != nil && w.call == nil {
		a.ctx.inline = w
		cl.RecvCall(&a.ctx, r)
		a.endInline(w)
	} else {
		cl.RecvCall(&a.ctx, r)
	}
	a.inReader.Store(false)
}

// endInline ends a delivery by w, a connection goroutine: if the call ran
// inline (TakeInline), w finds whether it still holds the role.
func (a *answer) endInline(w *reader) {
	a.ctx.inline = nil
	if a.ctx.by != nil {
		a.c.leaveBusy(w, &a.ctx)
	}
}
