package rpcconn

import (
	"context"
	"errors"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A question is the caller's side of a call or bootstrap request sent to
// the peer. It is the capnp.PipelineCaller of the call's Promise.
type question struct {
	c      *Conn
	id     uint32
	p      *capnp.Promise // nil for a direct call
	dc     *Call          // the direct call, or nil
	size   uint64         // bytes counted in c.qBytes
	result *capnp.Message // the Return message, kept for the results

	// Guarded by c.mu.
	watch    *ctxWatch     // cancels q when the call's context ends
	widx     int           // q's index in watch.qs
	state    questionState // with the peer (states.go)
	hold     questionHold  // with the caller (states.go)
	onReturn []func()
	// settled: resolve has run and taken onReturn. Not part of state:
	// a canceled question settles before or after its Return frees it,
	// and a ReleaseFunc may give the budget back (hold) before settle
	// marks it, as the Answer's Done is closed first.
	settled bool
	// open: counted in c.qOpen (and plain in c.plainOpen) until
	// closeQuestion, when q leaves qOpen (for qReturned or qCanceled;
	// for qFreed when it was never sent); accounting, not state: the
	// end fails questions without uncounting them. A question that
	// takes its results from an answer of ours (yourself.go) stays
	// counted while it waits for them, until finishTaken.
	open bool
	// The kind of call, set when it is sent: not lifecycle.
	plain  bool // a call not to a `-> stream` method, counted in c.plainOpen
	stream bool // a call to a `-> stream` method, counted in c.streamOpen

	paths     [][]capnp.PipelineOp // transforms pipelined calls went to
	paramCaps []uint32             // exports counted for the params

	// Guarded by c.mu: a Return with takeFromOtherQuestion (yourself.go).
	taking       *answer // the answer whose results are q's, until they are
	takeNoFinish bool    // that Return's noFinishNeeded
}

// addPath records that a call was pipelined to transform.
func (q *question) addPath(lc *lockedConn, t []capnp.PipelineOp) {
	for _, p := range q.paths {
		if samePath(p, t) {
			return
		}
	}
	cp := make([]capnp.PipelineOp, len(t))
	for i := range t {
		cp[i].Field = t[i].Field
	}
	q.paths = append(q.paths, cp)
}

func samePath(a, b []capnp.PipelineOp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Field != b[i].Field {
			return false
		}
	}
	return true
}

// callTarget is where a call goes: an import, or a promised answer.
type callTarget struct {
	imp       *importClient
	q         *question
	transform []capnp.PipelineOp
}

// Bootstrap asks the peer for its bootstrap capability. The result is a
// promise that calls can be made on at once. ctx bounds the request: if
// it ends before the answer, the capability is broken with ctx.Err().
func (c *Conn) Bootstrap(ctx context.Context) capnp.Client {
	lc := c.lock()
	if c.closing {
		err := c.discErr
		lc.unlock()
		return capnp.ErrorClient(err)
	}
	q := lc.newQuestion(capnp.Method{InterfaceName: "bootstrap"}, 0, nil)
	msg, root := newMessage()
	b, _ := root.NewBootstrap()
	b.SetQuestionId(q.id)
	if ctx.Done() != nil {
		lc.watch(q, ctx)
	}
	c.send(msg, nil)
	lc.unlock()
	ans := q.p.Answer()
	cl := ans.Client().AddRef()
	cl.AttachReleaser(func() {
		q.cancel(exc.New(exc.Failed, "rpcconn", "bootstrap capability released"))
		q.p.ReleaseClients()
		q.releaseResult()
		lc = c.lock()
		lc.releaseBudget(q)
		lc.unlock()
	})
	return cl
}

// newQuestion adds a question to the table.
func (c *lockedConn) newQuestion(m capnp.Method, size uint64, dc *Call) *question {
	var q *question
	if dc != nil {
		q = &dc.qst
		*q = question{c: c.conn(), size: size, dc: dc}
	} else {
		q = &question{c: c.conn(), size: size}
	}
	if n := len(c.freeQ); n > 0 {
		q.id = c.freeQ[n-1]
		c.freeQ = c.freeQ[:n-1]
		c.questions[q.id] = q
	} else {
		q.id = uint32(len(c.questions))
		c.questions = append(c.questions, q)
	}
	c.qCount++
	c.qBytes += size
	q.open = true
	c.qOpen++
	c.openQ.Add(1)
	if dc == nil {
		q.p = capnp.NewPromise(m, q, nil)
	}
	return q
}

// closeQuestion notes that q is no longer waiting for its Return (it came,
// or q took its results from an answer of ours, or q was canceled or never
// sent).
func (c *lockedConn) closeQuestion(q *question) {
	if q.open {
		q.open = false
		c.qOpen--
		c.openQ.Add(-1)
		if q.plain {
			c.plainOpen.Add(-1)
		}
	}
}

// releaseBudget gives back what q counted against MaxCalls and
// MaxBytesInFlight. It runs when the caller releases the answer, not at
// the Return: results not yet released are in flight too, and this is what
// bounds a stream (go-capnp's SendStreamCall keeps a goroutine per call
// until it has released the answer).
func (c *lockedConn) releaseBudget(q *question) {
	if q.hold != holdCounted {
		return
	}
	q.toHold(c, holdReleased)
	c.qCount--
	c.qBytes -= q.size
	if q.stream {
		c.streamOpen--
		c.streamBytes -= q.size
		if c.sWait != nil && c.streamOpen <= c.sWaitAt && c.streamBytes <= DirectStreamBytes-DirectStreamBytes/8 {
			close(c.sWait)
			c.sWait = nil
		}
	}
	if c.qWait != nil {
		close(c.qWait)
		c.qWait = nil
	}
}

// freeQuestion takes q out of the table, so that its ID may be reused.
func (c *lockedConn) freeQuestion(q *question) {
	switch q.state {
	case qFreed, qCanceledFreed:
		return
	case qCanceled:
		q.to(c, qCanceledFreed)
	default:
		q.to(c, qFreed)
	}
	if !c.closing && int(q.id) < len(c.questions) && c.questions[q.id] == q {
		c.questions[q.id] = nil
		c.freeQ = append(c.freeQ, q.id)
	}
	if q.dc != nil && q.hold == holdDone {
		// The caller let go first: the connection was the last user.
		q.dc.recycleLocked(c)
	}
}

// questionFor finds the unanswered question whose answer is ans.
func (c *lockedConn) questionFor(ans *capnp.Answer) *question {
	for _, q := range c.questions {
		if q != nil && !q.state.returned() && q.p != nil && q.p.Answer() == ans {
			return q
		}
	}
	return nil
}

// resolve settles q's promise and runs what waited for it. The caller
// holds no lock and has moved q on from qOpen.
func (q *question) resolve(p capnp.Ptr, err error) { q.settle(p, err, false) }

// settle is resolve; free also takes q out of the table (freeQuestion) in
// the same critical section, for a Return that needs no Finish.
func (q *question) settle(p capnp.Ptr, err error, free bool) {
	if q.dc != nil {
		q.settleDirect(p, err, free)
		return
	}
	if promiseLockStuck(q.p) {
		// See gocapnp.go (5): the program broke this promise; the
		// connection must not wait for it.
		q.c.log.Error("rpcconn: a call's answer cannot be delivered: go-capnp left its promise locked (Future.Client called again, as by a generated accessor, while the call was in flight); its callers will wait for ever",
			"question", q.id)
		go q.p.Resolve(p, err)
	} else {
		q.p.Resolve(p, err)
	}
	lc := q.c.lock()
	lc.unwatch(q)
	if free {
		lc.freeQuestion(q)
	}
	fns := q.onReturn
	q.onReturn = nil
	q.settled = true
	lc.unlock()
	for _, f := range fns {
		f()
	}
}

func (q *question) releaseResult() {
	if m := q.result; m != nil {
		q.result = nil
		m.Release()
	}
}

// cancel sends a Finish for an unanswered question and fails it with err.
func (q *question) cancel(err error) {
	c := q.c
	lc := c.lock()
	ok := lc.cancelLocked(q)
	lc.unlock()
	if ok {
		q.resolve(capnp.Ptr{}, err)
	}
}

// cancelLocked sends a Finish for q if it is unanswered and reports
// whether it did; the caller then resolves q with the error, after
// unlocking.
func (c *lockedConn) cancelLocked(q *question) bool {
	if q.state != qOpen || c.closing {
		return false
	}
	// A direct call's caller may be reading, for a Return that may be
	// long in coming: settling a canceled call pulls it out of Read.
	q.to(c, qCanceled)
	c.closeQuestion(q)
	msg, root := newMessage()
	f, _ := root.NewFinish()
	f.SetQuestionId(q.id)
	f.SetReleaseResultCaps(true)
	c.conn().send(msg, nil)
	return true
}

// PipelineSend implements capnp.PipelineCaller.
func (q *question) PipelineSend(ctx context.Context, transform []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	_, ans, rel := q.c.sendCall(ctx, callTarget{q: q, transform: transform}, s, true)
	return ans, rel
}

// PipelineRecv implements capnp.PipelineCaller.
func (q *question) PipelineRecv(ctx context.Context, transform []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	return q.c.forward(ctx, callTarget{q: q, transform: transform}, r)
}

// forward sends a received call on to the peer without waiting, and
// returns the results to r's Returner when they come.
func (c *Conn) forward(ctx context.Context, t callTarget, r capnp.Recv) capnp.PipelineCaller {
	q, ans, rel := c.sendCall(ctx, t, capnp.Send{
		Method:   r.Method,
		ArgsSize: r.Args.Size(),
		PlaceArgs: func(s capnp.Struct) error {
			if err := checkCopy(r.Args); err != nil {
				return err
			}
			return s.CopyFrom(r.Args)
		},
	}, false)
	if ans == nil {
		// The promised answer settled first: hand the call to what it
		// settled to. resolve is running or has run, so the wait is
		// short; and the reader never waits here for itself, as it
		// settles a question before reading on.
		select {
		case <-t.q.p.Answer().Done():
		case <-ctx.Done():
			r.Reject(ctx.Err())
			return failedCaller{ctx.Err()}
		}
		return orFailed(t.q.p.Answer().PipelineRecv(ctx, t.transform, r))
	}
	r.ReleaseArgs()
	finish := func() { returnAnswer(r.Returner, ans, rel) }
	if q != nil {
		lc := c.lock()
		if !q.settled {
			q.onReturn = append(q.onReturn, finish)
			lc.unlock()
			return ans
		}
		lc.unlock()
	}
	// Settled already (an error answer, or a question settled since).
	// The answer is returned all the same, never nil: go-capnp's
	// AnswerQueue.Fulfill takes the method value of what Recv returns
	// (a nil PipelineCaller crashes the process there).
	<-ans.Done()
	finish()
	return ans
}

func returnAnswer(ret capnp.Returner, ans *capnp.Answer, release capnp.ReleaseFunc) {
	defer release()
	st, err := ans.Struct()
	err = relayRemote(err)
	if err == nil {
		var out capnp.Struct
		if out, err = ret.AllocResults(st.Size()); err == nil {
			if err = checkCopy(st); err == nil {
				err = out.CopyFrom(st)
			}
		}
	}
	ret.PrepareReturn(err)
	ret.Return()
	ret.ReleaseResults()
}

// sendCall sends a call to t. block says whether it may wait for the
// calls-in-flight limits (not when called from the reader).
func (c *Conn) sendCall(ctx context.Context, t callTarget, s capnp.Send, block bool) (*question, *capnp.Answer, capnp.ReleaseFunc) {
	msg, root := newMessage()
	call, err := root.NewCall()
	var params rpccp.Payload
	if err == nil {
		params, err = buildCall(call, t, s)
	}
	if err != nil {
		msg.Release()
		return nil, capnp.ErrorAnswer(s.Method, exc.WrapError("rpcconn: build call", err)), func() {}
	}
	q, err := c.sendMsg(ctx, t, s.Method, msg, nil, call, params, block, nil)
	if err == errRedirect {
		// The Return (or a cancellation) won the race: the promise is
		// (being) settled, and the peer may have forgotten the answer,
		// so the call goes to what the promise settled to.
		if !block {
			msg.Release()
			return nil, nil, nil // forward redirects the Recv itself
		}
		ans, rel := c.resend(ctx, t, s.Method, msg)
		return nil, ans, rel
	}
	if err != nil {
		return nil, capnp.ErrorAnswer(s.Method, err), func() {}
	}
	return q, q.p.Answer(), q.releaseFunc
}

// errRedirect is sendMsg's answer for a call to a promised answer whose
// Return (or cancellation) came first: the caller sends it on to what the
// answer settled to, and still owns msg.
var errRedirect = errors.New("rpcconn: promised answer settled")

// sendMsg sends msg, a Call message built for t (call is its Call, params
// its params; ext its lent segments, or nil) without its question ID, and
// returns its question. block
// says whether it may wait for the calls-in-flight limits (not when
// called from the reader). dc is the direct call the question settles,
// or nil for a question with a go-capnp Promise. On an error other than
// errRedirect, msg has been released.
func (c *Conn) sendMsg(ctx context.Context, t callTarget, m capnp.Method, msg *capnp.Message, ext *outExt, call rpccp.Call, params rpccp.Payload, block bool, dc *Call) (*question, error) {
	size := msgSize(msg)
	if ext != nil {
		size += ext.size
	}
	var release []capnp.Client
	lc := c.lock()
	// Whether the method streams matters only with many calls in
	// flight; its first lookup decodes a schema file (a few hundred
	// microseconds), which a program's first calls need not pay. A
	// direct call knows.
	stream := false
	if dc != nil {
		stream = dc.stream
	} else if block && c.qCount >= streamLookupMin {
		k := methodKey{m.InterfaceID, m.MethodID}
		if c.lastMethod.ok && c.lastMethod.k == k {
			// The same method as the last call: a stream's calls.
			stream = c.lastMethod.stream
		} else {
			lc.unlock()
			stream = isStreamMethod(m)
			lc = c.lock()
			c.lastMethod.k, c.lastMethod.stream, c.lastMethod.ok = k, stream, true
		}
	}
	var slow <-chan time.Time
	window := StreamWindow
	if dc != nil {
		window = c.directStreamWindow()
	}
	for block && !c.closing && c.qCount > 0 && (c.qCount >= c.lim.maxCalls || c.qBytes+size > c.lim.maxBytes ||
		(stream && lc.streamFull(window, size))) {
		var ch chan struct{}
		if c.qCount >= c.lim.maxCalls || c.qBytes+size > c.lim.maxBytes {
			if c.qWait == nil {
				c.qWait = make(chan struct{})
			}
			ch = c.qWait
		} else {
			// Only the stream window is full: wait until an eighth
			// of it is free, so that a stream's sender wakes once
			// per 64 answers released (of DirectStreamWindow) rather
			// than once each, and the peer still has most of the
			// window to work on while this sender refills it.
			if c.sWait == nil {
				c.sWait = make(chan struct{})
				c.sWaitAt = 0
			}
			c.sWaitAt = max(c.sWaitAt, window-window/8)
			ch = c.sWait
		}
		// A wait for room that lasts may be a caller's bug: see
		// warnUnreleased. One timer per call at most.
		if slow == nil && c.qCount >= c.lim.maxCalls && !c.warnedUnreleased {
			t := time.NewTimer(unreleasedWarnAfter)
			defer t.Stop()
			slow = t.C
		}
		lc.unlock()
		if stream {
			// What this sender queued goes out before it sleeps
			// (streamWriteAt).
			c.flush()
		}
		select {
		case <-ch:
		case <-slow:
			lc = c.lock()
			if c.qCount >= c.lim.maxCalls && !c.warnedUnreleased {
				lc.warnUnreleased()
			}
			lc.unlock()
		case <-ctx.Done():
			msg.Release()
			return nil, ctx.Err()
		}
		lc = c.lock()
	}
	if c.closing {
		err := c.discErr
		lc.unlock()
		msg.Release()
		return nil, err
	}
	if t.imp != nil && t.imp.gone {
		lc.unlock()
		msg.Release()
		return nil, exc.New(exc.Failed, "rpcconn", "call on a released capability")
	}
	if t.q != nil && t.q.state != qOpen {
		lc.unlock()
		return nil, errRedirect
	}
	if t.q != nil {
		t.q.addPath(lc, t.transform)
	} else {
		t.imp.called = true
	}
	q := lc.newQuestion(m, size, dc)
	if stream {
		q.stream = true
		c.streamOpen++
		c.streamBytes += size
	} else {
		q.plain = true
		c.plainOpen.Add(1)
	}
	call.SetQuestionId(q.id)
	var err2 error
	if q.paramCaps, err2 = lc.describeCaps(params, msg.CapTable(), &release); err2 != nil {
		err := err2
		lc.closeQuestion(q)
		lc.freeQuestion(q)
		lc.releaseBudget(q)
		lc.unlock()
		msg.Release()
		return nil, err
	}
	if ctx.Done() != nil {
		lc.watch(q, ctx)
	}
	kick, encoded, write := lc.enqueueCall(msg, ext, stream && dc != nil)
	// With other calls in flight, the writer batches.
	direct := c.qOpen <= 1
	lc.unlock()
	if encoded {
		recycleOut(msg)
	}
	switch {
	case write:
		c.role.stats.senderFlush.Add(1)
		c.flush()
	case kick && direct:
		c.flush()
	case kick:
		c.wakeWriter()
	}
	return q, nil
}

func (q *question) releaseFunc() {
	<-q.p.Answer().Done()
	q.p.ReleaseClients()
	lc := q.c.lock()
	m := q.result
	q.result = nil
	lc.releaseBudget(q)
	lc.unlock()
	if m != nil {
		recycleRecv(m)
	}
}

// resend sends a call built for a promised answer that has returned to
// the capability the answer resolved to.
func (c *Conn) resend(ctx context.Context, t callTarget, m capnp.Method, msg *capnp.Message) (*capnp.Answer, capnp.ReleaseFunc) {
	root, _ := rpccp.ReadRootMessage(msg)
	call, _ := root.Call()
	params, _ := call.Params()
	content, _ := params.Content()
	args := content.Struct()
	select {
	case <-t.q.p.Answer().Done():
	case <-ctx.Done():
		msg.Release()
		return capnp.ErrorAnswer(m, ctx.Err()), func() {}
	}
	ans, rel := t.q.p.Answer().PipelineSend(ctx, t.transform, capnp.Send{
		Method:   m,
		ArgsSize: args.Size(),
		PlaceArgs: func(s capnp.Struct) error {
			if err := checkCopy(args); err != nil {
				return err
			}
			return s.CopyFrom(args)
		},
	})
	msg.Release()
	return ans, rel
}

// buildCall fills call for s to t and returns its params.
func buildCall(call rpccp.Call, t callTarget, s capnp.Send) (rpccp.Payload, error) {
	call.SetInterfaceId(s.Method.InterfaceID)
	call.SetMethodId(s.Method.MethodID)
	tgt, err := call.NewTarget()
	if err != nil {
		return rpccp.Payload{}, err
	}
	if t.imp != nil {
		tgt.SetImportedCap(t.imp.id)
	} else {
		pa, err := tgt.NewPromisedAnswer()
		if err != nil {
			return rpccp.Payload{}, err
		}
		pa.SetQuestionId(t.q.id)
		if len(t.transform) > 0 {
			ops, err := pa.NewTransform(int32(len(t.transform)))
			if err != nil {
				return rpccp.Payload{}, err
			}
			for i, op := range t.transform {
				ops.At(i).SetGetPointerField(op.Field)
			}
		}
	}
	params, err := call.NewParams()
	if err != nil {
		return rpccp.Payload{}, err
	}
	args, err := capnp.NewStruct(params.Segment(), s.ArgsSize)
	if err != nil {
		return rpccp.Payload{}, err
	}
	if err := params.SetContent(args.ToPtr()); err != nil {
		return rpccp.Payload{}, err
	}
	if s.PlaceArgs != nil {
		if err := s.PlaceArgs(args); err != nil {
			return rpccp.Payload{}, exc.WrapError("place args", err)
		}
	}
	return params, nil
}

func (c *Conn) handleReturn(msg *capnp.Message, root rpccp.Message) error {
	if !root.HasReturn() {
		msg.Release()
		return protoErr("return with a null body")
	}
	ret, err := root.Return()
	if err != nil {
		msg.Release()
		return protoErr("unreadable return: %v", err)
	}
	id := ret.AnswerId()
	noFinish := ret.NoFinishNeeded()
	releaseParams := ret.ReleaseParamCaps()
	// Read everything before touching a table.
	var content capnp.Ptr
	var descs rpccp.CapDescriptor_List
	var callErr error
	which := ret.Which()
	switch which {
	case rpccp.Return_Which_takeFromOtherQuestion:
		other := ret.TakeFromOtherQuestion()
		msg.Release()
		return c.takeFromOther(id, other, noFinish, releaseParams)
	case rpccp.Return_Which_resultsSentElsewhere:
		msg.Release()
		return protoErr("return %d: resultsSentElsewhere, but the call did not use sendResultsTo.yourself", id)
	case rpccp.Return_Which_results:
		if !ret.HasResults() {
			msg.Release()
			return protoErr("return %d: null results", id)
		}
		p, err := ret.Results()
		if err == nil {
			content, err = p.Content()
		}
		if err == nil {
			descs, err = readCapTable(p)
		}
		if err != nil {
			msg.Release()
			return protoErr("return %d: unreadable results: %v", id, err)
		}
	case rpccp.Return_Which_exception:
		if !ret.HasException() {
			msg.Release()
			return protoErr("return %d: null exception", id)
		}
		e, err := ret.Exception()
		if err != nil {
			msg.Release()
			return protoErr("return %d: unreadable exception: %v", id, err)
		}
		callErr = fromException(e)
	case rpccp.Return_Which_canceled:
		callErr = exc.New(exc.Failed, "rpcconn", "call canceled")
	default:
		msg.Release()
		return protoErr("return %d: unsupported kind %v", id, which)
	}
	if c.observe == nil && callErr == nil {
		if descs.Len() == 0 {
			c.rret.record(msg, ret, content)
		} else {
			c.rret.ok = false
		}
	}
	return c.handleReturned(msg, id, noFinish, releaseParams, content, descs, callErr)
}

// handleReturned handles a Return read (handleReturn, or from the
// template of the one before: handle).
func (c *Conn) handleReturned(msg *capnp.Message, id uint32, noFinish, releaseParams bool, content capnp.Ptr, descs rpccp.CapDescriptor_List, callErr error) error {
	var err error
	lc := c.lock()
	if c.closing {
		lc.unlock()
		msg.Release()
		return nil
	}
	var q *question
	if uint64(id) < uint64(len(c.questions)) {
		q = c.questions[id]
	}
	if q == nil || (q.state.returned() && !q.state.canceled()) || q.taking != nil {
		lc.unlock()
		msg.Release()
		return protoErr("return for unknown question %d", id)
	}
	release := lc.dropParamCaps(q, releaseParams)
	if q.state == qCanceled {
		// Canceled: its promise is settled, and the Finish told the
		// peer to release the result caps.
		lc.freeQuestion(q)
		lc.unlock()
		releaseAll(release)
		msg.Release()
		return nil
	}
	var caps []capnp.Client
	if callErr == nil {
		caps, err = lc.importCaps(descs, &release)
		if err != nil {
			// The connection ends; q is still unanswered, so the end
			// fails it (were it marked returned, nothing would settle
			// it, and its caller would wait forever).
			lc.unlock()
			releaseAll(release)
			releaseAll(caps)
			msg.Release()
			return err
		}
		if len(q.paths) > 0 && len(caps) > 0 {
			local := make([]bool, len(caps))
			for i := range caps {
				w := descs.At(i).Which()
				local[i] = w == rpccp.CapDescriptor_Which_receiverHosted || w == rpccp.CapDescriptor_Which_receiverAnswer
			}
			lc.embargoLocals(q, content, caps, local)
		}
	}
	q.to(lc, qReturned)
	lc.closeQuestion(q)
	lc.unlock()
	if q.dc != nil && !q.dc.stream {
		c.role.sawDirect = true
		if c.kr.holder == &q.dc.rd {
			c.role.stats.ownReturns.Add(1)
		}
	}
	releaseAll(release)
	if callErr == nil {
		msg.CapTable().Reset(caps...)
		q.result = msg
	} else {
		msg.Release()
	}
	if noFinish {
		q.settle(content, callErr, true)
		return nil
	}
	q.resolve(content, callErr)

	lc = c.lock()
	if !c.closing {
		fm, froot := newMessage()
		f, _ := froot.NewFinish()
		f.SetQuestionId(id)
		f.SetReleaseResultCaps(false)
		c.send(fm, nil)
	}
	lc.freeQuestion(q)
	lc.unlock()
	return nil
}

// dropParamCaps forgets the capabilities q's params exported and, if the
// Return says the callee dropped them (releaseParamCaps: nobody sends it,
// but it is the schema's default), releases one reference to each. It
// returns the clients to release once c.mu is let go.
func (c *lockedConn) dropParamCaps(q *question, releaseParams bool) []capnp.Client {
	var release []capnp.Client
	if releaseParams {
		for _, eid := range q.paramCaps {
			if cl, err := c.releaseExport(eid, 1); err == nil && cl.IsValid() {
				release = append(release, cl)
			}
		}
	}
	q.paramCaps = nil
	return release
}

// unreleasedWarnAfter is how long a call waits for room before
// warnUnreleased looks at why.
const unreleasedWarnAfter = time.Second

// warnUnreleased logs, once per connection, that calls wait because most
// of the calls counted in flight have returned and wait only for their
// callers to release the answers: a ReleaseFunc that is never called keeps
// its call's place, and once MaxCalls places are kept every new call
// waits.
func (c *lockedConn) warnUnreleased() {
	// Counted in flight (qCount) but no longer waiting for a Return
	// (qOpen): settled, and waiting only for the caller's release.
	unreleased := c.qCount - c.qOpen
	if unreleased < c.lim.maxCalls/2 {
		return
	}
	c.warnedUnreleased = true
	c.log.Warn("rpcconn: calls wait for room: answers returned but never released by their callers hold it (is a ReleaseFunc not called?)",
		"unreleased", unreleased, "max_calls", c.lim.maxCalls)
}
