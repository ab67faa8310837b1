package rpcconn

import (
	"context"
	"sync"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// An embargo holds the calls made on a capability that a Return revealed
// to be local, after calls pipelined through the peer to the same
// capability, until the Disembargo we sent behind them comes back: so
// calls arrive in the order they were made (the spec's E-order).
type embargo struct {
	id     uint32
	target capnp.Client  // the local capability
	ch     chan struct{} // closed when lifted

	mu     sync.Mutex
	lifted bool
	queue  []queuedRecv
}

type queuedRecv struct {
	ctx context.Context
	r   capnp.Recv
	h   *heldCall // its PipelineCaller while held
}

// lift delivers the held calls in order and lets new ones through.
func (e *embargo) lift() {
	for {
		e.mu.Lock()
		q := e.queue
		e.queue = nil
		if len(q) == 0 {
			e.lifted = true
			close(e.ch)
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		for _, x := range q {
			x.h.settle(e.target.RecvCall(x.ctx, x.r), nil)
		}
	}
}

func (e *embargo) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	select {
	case <-e.ch:
	case <-ctx.Done():
		return capnp.ErrorAnswer(s.Method, ctx.Err()), func() {}
	}
	return e.target.SendCall(ctx, s)
}

func (e *embargo) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	e.mu.Lock()
	if !e.lifted {
		h := hold(&r)
		e.queue = append(e.queue, queuedRecv{ctx, r, h})
		e.mu.Unlock()
		return h
	}
	e.mu.Unlock()
	return orFailed(e.target.RecvCall(ctx, r))
}

func (e *embargo) Brand() capnp.Brand { return capnp.Brand{Value: e} }
func (e *embargo) String() string     { return "rpcconn embargo" }
func (e *embargo) Shutdown()          { e.target.Release() }

// embargoLocals replaces, in a Return's cap table, each local capability
// that calls were pipelined to through q by an embargo, and queues the
// Disembargo for it. The Finish must follow.
func (c *lockedConn) embargoLocals(q *question, content capnp.Ptr, caps []capnp.Client, local []bool) {
	done := map[int]bool{}
	for _, t := range q.paths {
		p, err := capnp.Transform(content, t)
		if err != nil {
			continue
		}
		iface := p.Interface()
		i := int(iface.Capability())
		if !iface.IsValid() || i >= len(caps) || !local[i] || done[i] || !caps[i].IsValid() {
			continue
		}
		done[i] = true
		c.nextEmb++
		e := &embargo{id: c.nextEmb, target: caps[i], ch: make(chan struct{})}
		c.embargoes[e.id] = e
		caps[i] = capnp.NewClient(e)
		msg, root := newMessage()
		d, _ := root.NewDisembargo()
		tgt, _ := d.NewTarget()
		pa, _ := tgt.NewPromisedAnswer()
		pa.SetQuestionId(q.id)
		if len(t) > 0 {
			ops, _ := pa.NewTransform(int32(len(t)))
			for j, op := range t {
				ops.At(j).SetGetPointerField(op.Field)
			}
		}
		d.Context().SetSenderLoopback(e.id)
		c.conn().send(msg, nil)
	}
}

func (c *Conn) handleResolve(msg *capnp.Message, root rpccp.Message) error {
	if !root.HasResolve() {
		msg.Release()
		return protoErr("resolve with a null body")
	}
	r, err := root.Resolve()
	if err != nil {
		msg.Release()
		return protoErr("unreadable resolve: %v", err)
	}
	id := r.PromiseId()
	var d rpccp.CapDescriptor
	var rerr error
	which := r.Which()
	switch which {
	case rpccp.Resolve_Which_cap:
		if !r.HasCap() {
			msg.Release()
			return protoErr("resolve %d: null cap", id)
		}
		if d, err = r.Cap(); err != nil {
			msg.Release()
			return protoErr("resolve %d: unreadable cap: %v", id, err)
		}
	case rpccp.Resolve_Which_exception:
		if !r.HasException() {
			msg.Release()
			return protoErr("resolve %d: null exception", id)
		}
		e, err := r.Exception()
		if err != nil {
			msg.Release()
			return protoErr("resolve %d: unreadable exception: %v", id, err)
		}
		rerr = fromException(e)
	default:
		msg.Release()
		return protoErr("resolve %d: unknown kind %v", id, which)
	}
	lc := c.lock()
	if c.closing {
		lc.unlock()
		msg.Release()
		return nil
	}
	var cl capnp.Client
	if rerr == nil {
		cl, err = lc.importCap(d)
		if err != nil {
			lc.unlock()
			msg.Release()
			return err
		}
	}
	h := c.imports[id]
	if h == nil || h.gone {
		dead := c.deadPromises[id] || c.deadOverflow
		delete(c.deadPromises, id)
		lc.unlock()
		msg.Release()
		cl.Release()
		if dead {
			// We released the promise before the Resolve crossed our
			// Release: drop the resolution, as the spec says.
			return nil
		}
		return protoErr("resolve of unknown promise %d", id)
	}
	if !h.promise {
		lc.unlock()
		msg.Release()
		cl.Release()
		return protoErr("resolve of import %d, which is not a promise", id)
	}
	if h.resolved {
		lc.unlock()
		msg.Release()
		cl.Release()
		return protoErr("second resolve of promise %d", id)
	}
	if rerr == nil && resolvesTo(cl, h) {
		// A promise must not resolve to itself, directly or through
		// promises resolved to one another (A to B, then B to A):
		// go-capnp would follow the chain for ever, in the reader.
		lc.unlock()
		msg.Release()
		cl.Release()
		return protoErr("resolve %d: the promise resolves to itself", id)
	}
	h.resolved = true
	if rerr == nil && h.called && cl.IsValid() &&
		(d.Which() == rpccp.CapDescriptor_Which_receiverHosted || d.Which() == rpccp.CapDescriptor_Which_receiverAnswer) {
		// Calls sent to the promise are on their way back to us: hold
		// new ones until the Disembargo, sent behind them, returns.
		c.nextEmb++
		e := &embargo{id: c.nextEmb, target: cl, ch: make(chan struct{})}
		c.embargoes[e.id] = e
		cl = capnp.NewClient(e)
		dm, root := newMessage()
		dis, _ := root.NewDisembargo()
		tgt, _ := dis.NewTarget()
		tgt.SetImportedCap(id)
		dis.Context().SetSenderLoopback(e.id)
		c.send(dm, nil)
	}
	lc.unlock()
	msg.Release()
	if rerr != nil {
		h.resolver.Reject(rerr)
	} else {
		h.resolver.Fulfill(cl) // takes a reference of its own
		cl.Release()
	}
	return nil
}

func (c *Conn) handleDisembargo(root rpccp.Message) error {
	if !root.HasDisembargo() {
		return protoErr("disembargo with a null body")
	}
	d, err := root.Disembargo()
	if err != nil {
		return protoErr("unreadable disembargo: %v", err)
	}
	ctx := d.Context()
	switch ctx.Which() {
	case rpccp.Disembargo_context_Which_senderLoopback:
	case rpccp.Disembargo_context_Which_receiverLoopback:
		id := ctx.ReceiverLoopback()
		lc := c.lock()
		e := c.embargoes[id]
		delete(c.embargoes, id)
		lc.unlock()
		if e == nil {
			return protoErr("disembargo for unknown embargo %d", id)
		}
		e.lift()
		return nil
	default:
		return protoErr("disembargo context %v is not supported", ctx.Which())
	}
	embargoID := ctx.SenderLoopback()
	if !d.HasTarget() {
		return protoErr("disembargo without a target")
	}
	tgt, err := d.Target()
	if err != nil {
		return protoErr("disembargo: unreadable target: %v", err)
	}
	if tgt.Which() != rpccp.MessageTarget_Which_promisedAnswer {
		// We never send senderPromise, so no export of ours can be a
		// resolved promise that points back to the peer.
		return protoErr("disembargo target is not a resolved promise")
	}
	if !tgt.HasPromisedAnswer() {
		return protoErr("disembargo: null promisedAnswer")
	}
	pa, err := tgt.PromisedAnswer()
	if err != nil {
		return protoErr("disembargo: unreadable promisedAnswer: %v", err)
	}
	transform, err := parseTransform(pa)
	if err != nil {
		return err
	}
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return nil
	}
	a := c.answers[pa.QuestionId()]
	if a == nil || a.state == aRunning {
		lc.unlock()
		return protoErr("disembargo on question %d, which has not returned", pa.QuestionId())
	}
	if a.state.draining() {
		// The calls pipelined on a are still being handed on: reply
		// once they have been, in their order.
		a.pipeline = append(a.pipeline, pendingCall{fn: func() {
			if err := c.disembargoReply(a, transform, embargoID); err != nil {
				c.shutdown(err, true)
			}
		}})
		lc.unlock()
		return nil
	}
	lc.unlock()
	return c.disembargoReply(a, transform, embargoID)
}

// disembargoReply checks that the capability at transform in a's results
// points back to the peer, and reflects the Disembargo. Pipelined calls
// on a were forwarded when they were delivered, so they are ahead of the
// reply in the queue.
func (c *Conn) disembargoReply(a *answer, transform []capnp.PipelineOp, embargoID uint32) error {
	lc := c.lock()
	cl, err := a.target(lc, transform)
	lc.unlock()
	if err != nil {
		return protoErr("disembargo target is not a capability: %v", err)
	}
	snap := cl.Snapshot()
	h, ok := snap.Brand().Value.(*importClient)
	snap.Release()
	cl.Release()
	if !ok || h.c != c {
		return protoErr("disembargo target does not point back to the peer")
	}
	msg, mroot := newMessage()
	out, _ := mroot.NewDisembargo()
	ot, _ := out.NewTarget()
	ot.SetImportedCap(h.id)
	out.Context().SetReceiverLoopback(embargoID)
	lc = c.lock()
	c.send(msg, nil)
	lc.unlock()
	return nil
}

// unresolvedPromises marks the promise imports that never resolved as
// resolved and returns them, for shutdown to break: a promise the peer can
// no longer resolve must not keep Client.Resolve waiting. The caller is
// ending the connection.
func (c *lockedConn) unresolvedPromises() []*importClient {
	var out []*importClient
	for _, h := range c.imports {
		if h.promise && !h.resolved && h.resolver != nil {
			h.resolved = true
			out = append(out, h)
		}
	}
	return out
}

func breakPromises(hs []*importClient, err error) {
	for _, h := range hs {
		h.resolver.Reject(err)
	}
}

// resolvesTo reports whether cl has resolved, so far, to the import h: a
// client's snapshot is the hook it has resolved to, whose brand is its
// import. cl keeps that hook referenced, so the snapshot's release is
// never the last. The caller may hold c.mu.
func resolvesTo(cl capnp.Client, h *importClient) bool {
	snap := cl.Snapshot()
	defer snap.Release()
	return snap.Brand().Value == any(h)
}
