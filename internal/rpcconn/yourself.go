package rpcconn

import (
	"errors"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Tail calls (rpc.capnp, Level 1). A peer holding calls of ours on a
// promise that turns out to be a capability we host reflects each call
// back to us as a Call with sendResultsTo.yourself, and answers our
// question with a Return whose takeFromOtherQuestion names that Call: its
// results are the results of our question. The C++ reference does this
// for every call pipelined through it that comes back to us. We keep the
// results of such a call in its answer (for the question that takes them,
// and for calls the peer pipelines on it), reply resultsSentElsewhere, and
// resolve the question with a copy once the call has returned.
//
// This side never sends either: forwarding a call back costs a round
// trip more but is correct, and go-capnp's rpc supports neither.

// resultsToYourself reads a Call's sendResultsTo: true for yourself.
func resultsToYourself(call rpccp.Call) (bool, error) {
	switch w := call.SendResultsTo().Which(); w {
	case rpccp.Call_sendResultsTo_Which_caller:
		return false, nil
	case rpccp.Call_sendResultsTo_Which_yourself:
		return true, nil
	default:
		return false, protoErr("call %d: sendResultsTo %v is not supported", call.QuestionId(), w)
	}
}

// keepResults returns the Return message for a call with
// sendResultsTo.yourself (resultsSentElsewhere) and keeps its results, or
// its error, in a. The caller is a's Return.
func (a *answer) keepResults(lc *lockedConn, drop *[]*capnp.Message) *capnp.Message {
	if a.err != nil {
		if a.ret != nil {
			*drop = append(*drop, a.ret)
		}
		a.ret = nil
		a.resultErr = a.err
		a.toMsg(lc, msgReleased)
	} else {
		// a.ret is never written: it may go once the peer's Finish came.
		a.toMsg(lc, msgWritten)
	}
	msg, root := newMessage()
	ret, _ := root.NewReturn()
	ret.SetAnswerId(a.id)
	ret.SetReleaseParamCaps(false)
	ret.SetResultsSentElsewhere()
	return msg
}

// A taken is the outcome of a question whose Return took its results from
// an answer: run it after unlocking c.mu.
type taken struct {
	q       *question
	msg     *capnp.Message // a copy of the answer's results, owned
	content capnp.Ptr
	err     error
}

func (t taken) run() {
	if t.q != nil {
		t.q.finishTaken(t.msg, t.content, t.err)
	}
}

// takeResults hands a's results to the question waiting for them, if any.
// a has returned.
func (a *answer) takeResults(lc *lockedConn) taken {
	q := a.taker
	if q == nil {
		return taken{}
	}
	a.taker = nil
	return a.resultsFor(lc, q)
}

// failTaker fails the question waiting for a's results: a ended without
// results (the peer finished it first, or the connection ended).
func (a *answer) failTaker(lc *lockedConn) taken {
	q := a.taker
	if q == nil {
		return taken{}
	}
	a.taker = nil
	err := error(errCanceled)
	if a.c.closing {
		err = a.c.discErr
	}
	return taken{q: q, err: err}
}

// resultsFor copies a's results (or takes its error) for q. c.mu, held,
// keeps the results message from going meanwhile.
func (a *answer) resultsFor(lc *lockedConn, q *question) taken {
	if a.resultErr != nil {
		return taken{q: q, err: a.resultErr}
	}
	if a.msg == msgReleased || a.ret == nil {
		return taken{q: q, err: disconnected(errors.New("results already released"))}
	}
	msg, _, err := capnp.NewMessage(capnp.MultiSegment(nil))
	if err == nil {
		err = msg.SetRoot(a.content) // a deep copy; capabilities get a reference each
	}
	var content capnp.Ptr
	if err == nil {
		content, err = msg.Root()
	}
	if err != nil {
		if msg != nil {
			msg.Release()
		}
		return taken{q: q, err: exc.WrapError("rpcconn: take results", err)}
	}
	return taken{q: q, msg: msg, content: content}
}

// takeFromOther handles a Return with takeFromOtherQuestion: question id
// gets the results of the peer's call other, which used
// sendResultsTo.yourself.
func (c *Conn) takeFromOther(id, other uint32, noFinish, releaseParams bool) error {
	lc := c.lock()
	if c.closing {
		lc.unlock()
		return nil
	}
	var q *question
	if uint64(id) < uint64(len(c.questions)) {
		q = c.questions[id]
	}
	if q == nil || (q.state.returned() && !q.state.canceled()) || q.taking != nil {
		lc.unlock()
		return protoErr("return for unknown question %d", id)
	}
	a := c.answers[other]
	var err error
	switch {
	case a == nil:
		err = protoErr("return %d: takeFromOtherQuestion names unknown question %d", id, other)
	case a.tail == tailNone:
		err = protoErr("return %d: takeFromOtherQuestion names question %d, which did not use sendResultsTo.yourself", id, other)
	case a.tail == tailTaken:
		err = protoErr("return %d: takeFromOtherQuestion names question %d, whose results were taken already", id, other)
	}
	if err != nil {
		lc.unlock()
		return err
	}
	a.toTail(lc, tailTaken)
	release := lc.dropParamCaps(q, releaseParams)
	if q.state == qCanceled {
		// Canceled: its promise is settled, and our Finish tells the
		// peer to finish the other call too.
		lc.freeQuestion(q)
		lc.unlock()
		releaseAll(release)
		return nil
	}
	q.taking = a
	q.takeNoFinish = noFinish
	var t taken
	if a.state != aRunning {
		t = a.resultsFor(lc, q)
	} else {
		a.taker = q // a's Return hands them over
	}
	lc.unlock()
	releaseAll(release)
	t.run()
	return nil
}

// finishTaken settles a question whose results came from an answer of
// ours, then sends its Finish (after which the peer finishes that answer).
// res is the copy of the results, which q owns from here on.
func (q *question) finishTaken(res *capnp.Message, content capnp.Ptr, err error) {
	c := q.c
	lc := c.lock()
	if c.closing || q.state.returned() {
		// The end, or a cancellation by ctx, settled q meanwhile.
		lc.unlock()
		if res != nil {
			res.Release()
		}
		return
	}
	q.taking = nil
	if q.state == qCanceled {
		lc.freeQuestion(q)
		lc.unlock()
		if res != nil {
			res.Release()
		}
		return
	}
	q.to(lc, qReturned)
	// No longer awaiting anything: uncounted here, as handleReturn does
	// (a cancellation while q waited for the results did it already).
	lc.closeQuestion(q)
	if err == nil && len(q.paths) > 0 {
		lc.embargoTaken(q, res, content)
	}
	lc.unlock()
	if err == nil {
		q.result = res
	} else if res != nil {
		res.Release()
	}
	q.resolve(content, err)

	lc = c.lock()
	if !c.closing && !q.takeNoFinish {
		fm, froot := newMessage()
		f, _ := froot.NewFinish()
		f.SetQuestionId(q.id)
		f.SetReleaseResultCaps(false)
		c.send(fm, nil)
	}
	lc.freeQuestion(q)
	lc.unlock()
}

// embargoTaken puts the local capabilities in res that calls were
// pipelined to through q under embargo: those calls went to the peer,
// which sends them back to us, and new calls must not overtake them. The
// Disembargo goes before q's Finish.
func (c *lockedConn) embargoTaken(q *question, res *capnp.Message, content capnp.Ptr) {
	ct := res.CapTable()
	n := ct.Len()
	if n == 0 {
		return
	}
	caps := make([]capnp.Client, n)
	local := make([]bool, n)
	for i := range caps {
		caps[i] = ct.At(i)
		local[i] = caps[i].IsValid() && !c.isImport(caps[i])
	}
	c.embargoLocals(q, content, caps, local)
	for i := range caps {
		// An embargoed capability took over the table's reference.
		ct.Set(capnp.CapabilityID(i), caps[i])
	}
}

// isImport reports whether cl is a capability the peer hosts. cl holds a
// reference, so no hook shuts down here.
func (c *lockedConn) isImport(cl capnp.Client) bool {
	snap := cl.Snapshot()
	defer snap.Release()
	h, ok := snap.Brand().Value.(*importClient)
	return ok && h.c == c.conn()
}
