package rpcconn

import (
	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// handle processes one received message, which it owns, as w, which
// holds the reading role. It returns an error that ends the connection:
// a *ProtocolError for the peer's faults.
func (c *Conn) handle(w *reader, msg *capnp.Message, size uint64) error {
	if size == bareReturn.size() && c.handleBareReturn(msg) {
		return nil
	}
	if c.observe == nil {
		var h callHead
		if c.rcall.match(msg, &h) {
			c.role.callSeen = true
			c.role.stats.templated.Add(1)
			return c.serveCall(w, msg, &h, size)
		}
		if id, _, content, ok := c.rret.match(msg); ok {
			c.role.stats.templated.Add(1)
			return c.handleReturned(msg, id, c.rret.noFinish, c.rret.releaseParams, content, rpccp.CapDescriptor_List{}, nil)
		}
	}
	root, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		msg.Release()
		return protoErr("unreadable message: read root: %v", err)
	}
	if c.observe != nil {
		c.observe(false, root)
	}
	which := root.Which()
	switch which {
	case rpccp.Message_Which_call, rpccp.Message_Which_bootstrap, rpccp.Message_Which_disembargo:
		c.role.callSeen = true
	}
	switch which {
	case rpccp.Message_Which_call:
		return c.handleCall(w, msg, root, size)
	case rpccp.Message_Which_return:
		return c.handleReturn(msg, root)
	case rpccp.Message_Which_finish:
		defer msg.Release()
		return c.handleFinish(root)
	case rpccp.Message_Which_release:
		defer msg.Release()
		return c.handleRelease(root)
	case rpccp.Message_Which_bootstrap:
		defer msg.Release()
		return c.handleBootstrap(root)
	case rpccp.Message_Which_resolve:
		return c.handleResolve(msg, root)
	case rpccp.Message_Which_disembargo:
		defer msg.Release()
		return c.handleDisembargo(root)
	case rpccp.Message_Which_abort:
		defer msg.Release()
		reason := "(no reason given)"
		typ := exc.Failed
		if root.HasAbort() {
			if e, err := root.Abort(); err == nil {
				typ = exc.Type(e.Type())
				if r, err := e.Reason(); err == nil {
					reason = r
				}
			}
		}
		return &ProtocolError{Remote: true, Reason: reason, Type: typ}
	case rpccp.Message_Which_unimplemented:
		defer msg.Release()
		return c.handleUnimplemented(root)
	default:
		// Level 2-4 messages and unknown ones: say so, as the spec asks.
		defer msg.Release()
		if err := checkCopy(capnp.Struct(root)); err != nil {
			return protoErr("unreadable %v message: %v", root.Which(), err)
		}
		reply, rroot := newMessage()
		if err := rroot.SetUnimplemented(root); err != nil {
			reply.Release()
			return protoErr("unreadable %v message: %v", root.Which(), err)
		}
		lc := c.lock()
		c.send(reply, nil)
		lc.unlock()
		return nil
	}
}

func (c *Conn) handleUnimplemented(root rpccp.Message) error {
	if !root.HasUnimplemented() {
		return protoErr("unimplemented with a null body")
	}
	m, err := root.Unimplemented()
	if err != nil {
		return protoErr("unreadable unimplemented: %v", err)
	}
	switch m.Which() {
	case rpccp.Message_Which_abort:
		return nil
	default:
		// We send nothing a Level 1 peer may refuse; a peer that does
		// cannot be talked to.
		return protoErr("peer does not implement %v", m.Which())
	}
}

// parseTransform reads a promisedAnswer's transform.
func parseTransform(pa rpccp.PromisedAnswer) ([]capnp.PipelineOp, error) {
	if !pa.HasTransform() {
		return nil, nil
	}
	l, err := pa.Transform()
	if err != nil {
		return nil, protoErr("unreadable transform: %v", err)
	}
	if l.Len() == 0 {
		return nil, nil
	}
	ops := make([]capnp.PipelineOp, 0, l.Len())
	for i := 0; i < l.Len(); i++ {
		op := l.At(i)
		switch op.Which() {
		case rpccp.PromisedAnswer_Op_Which_noop:
		case rpccp.PromisedAnswer_Op_Which_getPointerField:
			ops = append(ops, capnp.PipelineOp{Field: op.GetPointerField()})
		default:
			return nil, protoErr("unknown transform op %d", op.Which())
		}
	}
	return ops, nil
}

// parsedCaps holds a payload's cap descriptors, read before any table
// is touched.
func readCapTable(p rpccp.Payload) (rpccp.CapDescriptor_List, error) {
	if !p.HasCapTable() {
		return rpccp.CapDescriptor_List{}, nil
	}
	l, err := p.CapTable()
	if err != nil {
		return rpccp.CapDescriptor_List{}, protoErr("unreadable cap table: %v", err)
	}
	return l, nil
}

func (c *Conn) handleCall(w *reader, msg *capnp.Message, root rpccp.Message, size uint64) error {
	h, err := parseCall(root)
	if err != nil {
		msg.Release()
		return err
	}
	if c.observe == nil {
		c.rcall.record(msg, root, &h)
	}
	return c.serveCall(w, msg, &h, size)
}

// A callHead is what serving a received Call needs of its message.
type callHead struct {
	qid       uint32
	redirect  bool // sendResultsTo.yourself
	promised  bool // the target is paID's answer, with transform; else importID
	importID  uint32
	paID      uint32
	transform []capnp.PipelineOp
	method    capnp.Method
	content   capnp.Ptr
	descs     rpccp.CapDescriptor_List
}

// parseCall reads and checks a received Call through go-capnp.
func parseCall(root rpccp.Message) (callHead, error) {
	var h callHead
	if !root.HasCall() {
		return h, protoErr("call with a null body")
	}
	call, err := root.Call()
	if err != nil {
		return h, protoErr("unreadable call: %v", err)
	}
	qid := call.QuestionId()
	h.qid = qid
	if h.redirect, err = resultsToYourself(call); err != nil {
		return h, err
	}
	if !call.HasTarget() {
		return h, protoErr("call %d without a target", qid)
	}
	tgt, err := call.Target()
	if err != nil {
		return h, protoErr("call %d: unreadable target: %v", qid, err)
	}
	switch tgt.Which() {
	case rpccp.MessageTarget_Which_importedCap:
		h.importID = tgt.ImportedCap()
	case rpccp.MessageTarget_Which_promisedAnswer:
		if !tgt.HasPromisedAnswer() {
			return h, protoErr("call %d: null promisedAnswer", qid)
		}
		pa, err := tgt.PromisedAnswer()
		if err != nil {
			return h, protoErr("call %d: unreadable promisedAnswer: %v", qid, err)
		}
		h.promised = true
		h.paID = pa.QuestionId()
		if h.transform, err = parseTransform(pa); err != nil {
			return h, err
		}
	default:
		return h, protoErr("call %d: unknown target kind %d", qid, tgt.Which())
	}
	if !call.HasParams() {
		return h, protoErr("call %d without params", qid)
	}
	params, err := call.Params()
	if err != nil {
		return h, protoErr("call %d: unreadable params: %v", qid, err)
	}
	if h.content, err = params.Content(); err != nil {
		return h, protoErr("call %d: unreadable params content: %v", qid, err)
	}
	if h.descs, err = readCapTable(params); err != nil {
		return h, err
	}
	h.method = capnp.Method{InterfaceID: call.InterfaceId(), MethodID: call.MethodId()}
	return h, nil
}

// serveCall serves a received Call, msg, read as h.
func (c *Conn) serveCall(w *reader, msg *capnp.Message, h *callHead, size uint64) error {
	fail := func(err error) error { msg.Release(); return err }
	qid := h.qid
	redirect := h.redirect
	transform := h.transform
	paID := h.paID
	content := h.content
	descs := h.descs

	var release []capnp.Client
	var target capnp.Client
	var snap capnp.ClientSnapshot // the export's hook, for a call on an import
	var snapOf *export            // snap is this export's own (export.deliverySnapshot)
	var targetErr error
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return fail(nil)
	}
	if _, dup := c.answers[qid]; dup {
		lc.unlock()
		return fail(protoErr("call: question ID %d already in use", qid))
	}
	if err := lc.checkAnswerLimits(); err != nil {
		lc.unlock()
		return fail(err)
	}
	c.finishOptional.remove(qid)
	if c.active > 0 && c.aBytes+size > c.lim.maxBytes {
		lc.unlock()
		return fail(protoErr("more than %d bytes of calls in flight", c.lim.maxBytes))
	}
	var base *answer
	if !h.promised {
		id := h.importID
		e := lc.export(id)
		if e == nil {
			lc.unlock()
			return fail(protoErr("call %d on unknown export %d", qid, id))
		}
		// The export's snapshot holds the hook during delivery
		// (Client.AddRef and RecvCall cost four allocations, a snapshot
		// per call one).
		var own bool
		if snap, own = e.deliverySnapshot(lc); own {
			snapOf = e
		}
	} else {
		base = c.answers[paID]
		if base == nil {
			if !c.finishOptional.has(paID) && !c.finishOverflow {
				lc.unlock()
				return fail(protoErr("call %d on unknown promised answer %d", qid, paID))
			}
			// Pipelined on results returned with noFinishNeeded, which
			// hold no capability.
			targetErr = errNotCapability
		}
	}
	caps, err := lc.importCaps(descs, &release)
	if err != nil {
		if snapOf != nil {
			snap = snapOf.doneDelivering(lc)
		}
		lc.unlock()
		snap.Release()
		releaseAll(release)
		releaseAll(caps)
		return fail(err)
	}
	// The message's cap table is empty: Reset releases nothing here.
	msg.CapTable().Reset(caps...)
	a := lc.newAnswer(qid, size, msg)
	if redirect {
		a.tail = tailKept
	}
	recv := capnp.Recv{
		Method: h.method,
		Args:   content.Struct(),
		// The parameters are released when the call returns (Return),
		// not by a method value of a (an allocation per call): every
		// Recv consumer calls ReleaseArgs before Return, so they live
		// only as long as the call, which counts their bytes in flight
		// (c.aBytes) until then anyway.
		ReleaseArgs: noRelease,
		Returner:    a,
	}
	queued := false
	if base != nil {
		if base.state.returned() {
			target, targetErr = base.target(lc, transform)
		} else {
			base.pipeline = append(base.pipeline, pendingCall{a: a, transform: transform, recv: recv})
			queued = true
		}
	}
	lc.unlock()
	releaseAll(release)
	if queued {
		return nil
	}
	if targetErr != nil {
		a.reject(targetErr)
		return nil
	}
	if snap.IsValid() {
		rel := a.deliverSnapshot(w, snap, recv, snapOf)
		if snapOf == nil {
			rel = snap
		}
		rel.Release()
		return nil
	}
	a.deliver(w, target, recv)
	target.Release()
	return nil
}

// finishWasOptional reports whether id is that of an answer returned with
// noFinishNeeded (see Conn.finishOptional), and forgets it.
func (c *lockedConn) finishWasOptional(id uint32) bool {
	if c.finishOptional.remove(id) {
		return true
	}
	return c.finishOverflow
}

// checkAnswerLimits refuses a new call from the peer beyond MaxCalls calls
// not yet returned, or beyond MaxTableSize answers not yet finished
// (go-capnp's rpc sends its Finish messages late, so returned answers may
// pile up there under load).
func (c *lockedConn) checkAnswerLimits() error {
	if c.active >= c.lim.maxCalls {
		return protoErr("more than %d calls in flight", c.lim.maxCalls)
	}
	if len(c.answers) >= c.lim.maxTable {
		return protoErr("more than %d answers not finished", c.lim.maxTable)
	}
	return nil
}

// newAnswer adds an answer to the table.
func (c *lockedConn) newAnswer(id uint32, size uint64, args *capnp.Message) *answer {
	a := &answer{c: c.conn(), id: id, size: size}
	a.args.Store(args)
	a.ctx.owner = c.owner
	a.ctx.conn = c.conn()
	c.answers[id] = a
	c.aBytes += size
	c.active++
	return a
}

func releaseAll(cs []capnp.Client) {
	for _, cl := range cs {
		cl.Release()
	}
}

func (c *Conn) handleBootstrap(root rpccp.Message) error {
	if !root.HasBootstrap() {
		return protoErr("bootstrap with a null body")
	}
	b, err := root.Bootstrap()
	if err != nil {
		return protoErr("unreadable bootstrap: %v", err)
	}
	qid := b.QuestionId()
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return nil
	}
	if _, dup := c.answers[qid]; dup {
		lc.unlock()
		return protoErr("bootstrap: question ID %d already in use", qid)
	}
	if err := lc.checkAnswerLimits(); err != nil {
		lc.unlock()
		return err
	}
	c.finishOptional.remove(qid)
	a := lc.newAnswer(qid, 0, nil)
	boot := c.boot.AddRef()
	lc.unlock()
	if !boot.IsValid() {
		a.reject(exc.New(exc.Failed, "rpcconn", "no bootstrap capability"))
		return nil
	}
	msg, mroot := newMessage()
	ret, _ := mroot.NewReturn()
	ret.SetAnswerId(qid)
	ret.SetReleaseParamCaps(false)
	payload, err := ret.NewResults()
	if err != nil {
		msg.Release()
		boot.Release()
		a.reject(err)
		return nil
	}
	id := msg.CapTable().Add(boot)
	a.content = capnp.NewInterface(payload.Segment(), id).ToPtr()
	payload.SetContent(a.content)
	a.ret, a.payload, a.alloced = msg, payload, true
	a.Return()
	return nil
}

func (c *Conn) handleFinish(root rpccp.Message) error {
	if !root.HasFinish() {
		return protoErr("finish with a null body")
	}
	f, err := root.Finish()
	if err != nil {
		return protoErr("unreadable finish: %v", err)
	}
	id := f.QuestionId()
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return nil
	}
	a := c.answers[id]
	if a == nil {
		optional := lc.finishWasOptional(id)
		lc.unlock()
		if optional {
			return nil
		}
		return protoErr("finish for unknown question %d", id)
	}
	if a.finished {
		lc.unlock()
		return protoErr("second finish for question %d", id)
	}
	a.finished = true
	a.releaseCaps = f.ReleaseResultCaps()
	if a.state == aRunning {
		// rpc.capnp: the callee may cancel a call the caller no longer
		// wants, but not while calls are pipelined on its results (a C++
		// caller finishes a question as soon as it has pipelined on it).
		pipelined := len(a.pipeline) > 0
		lc.unlock()
		if !pipelined {
			a.ctx.cancel()
		}
		return nil
	}
	// Returned (perhaps still handing queued pipelined calls on, which
	// keeps the results alive): the ID is the peer's again.
	lc.removeAnswer(a)
	lc.unlock()
	a.finishCleanup()
	return nil
}

func (c *Conn) handleRelease(root rpccp.Message) error {
	if !root.HasRelease() {
		return protoErr("release with a null body")
	}
	r, err := root.Release()
	if err != nil {
		return protoErr("unreadable release: %v", err)
	}
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return nil
	}
	cl, err := lc.releaseExport(r.Id(), r.ReferenceCount())
	lc.unlock()
	cl.Release()
	return err
}
