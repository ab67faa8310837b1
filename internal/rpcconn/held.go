package rpcconn

import (
	"context"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
)

// A heldCall is the PipelineCaller of a call that is waiting to be
// delivered: held by an embargo, or queued in an answer behind the calls
// the peer pipelined on it (answerHook). Calls pipelined on it wait in
// it, in the order they were made, until the held call is delivered and
// its own PipelineCaller is known; then they go there, and later ones go
// straight through. (go-capnp's AnswerQueue pipelines this way on the
// calls it delivers when a local promise resolves.)
//
// A held call delivered to a go-capnp server (its PipelineCaller is the
// server's AnswerQueue) keeps the calls pipelined on it until it returns:
// the AnswerQueue would queue them while the method runs, and its Fulfill
// crashes the process on a queued call whose target gives no
// PipelineCaller (a field that is not a capability, a null capability).
// Once the call has returned, the queue is drained and hands them on at
// once; the Returner of the held call, wrapped by hold, tells when.
type heldCall struct {
	mu       sync.Mutex
	done     bool
	pc       capnp.PipelineCaller // once done, or while waiting; nil: failed with err
	err      error
	queue    []heldPipelined
	watched  bool // hold wrapped the call's Returner
	returned bool // the call's Returner.Return has been called
	waiting  bool // settled on an AnswerQueue before the call returned
}

// hold returns the heldCall for the call r, whose Returner it wraps to
// learn when the call returns.
func hold(r *capnp.Recv) *heldCall {
	h := &heldCall{watched: true}
	r.Returner = heldReturner{r.Returner, h}
	return h
}

// heldReturner is the Returner of a held call: Return first hands on
// what waits in h for the call to return (see heldCall).
type heldReturner struct {
	capnp.Returner
	h *heldCall
}

func (r heldReturner) Return() {
	h := r.h
	h.mu.Lock()
	h.returned = true
	waiting := h.waiting
	h.waiting = false
	pc := h.pc
	h.mu.Unlock()
	if waiting {
		h.drain(pc, nil)
	}
	r.Returner.Return()
}

type heldPipelined struct {
	ctx       context.Context
	transform []capnp.PipelineOp
	r         capnp.Recv
	h         *heldCall // the pipelined call's own PipelineCaller
}

// errNoPipeline fails calls pipelined on a call whose delivery gave no
// PipelineCaller (it was refused at once, or already answered).
var errNoPipeline = exc.New(exc.Failed, "rpcconn", "pipelined call on a call that has no pipeline")

func (h *heldCall) PipelineRecv(ctx context.Context, transform []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	h.mu.Lock()
	if !h.done {
		next := hold(&r)
		t := make([]capnp.PipelineOp, len(transform))
		copy(t, transform)
		h.queue = append(h.queue, heldPipelined{ctx: ctx, transform: t, r: r, h: next})
		h.mu.Unlock()
		return next
	}
	pc, err := h.pc, h.err
	h.mu.Unlock()
	if pc == nil {
		r.Reject(err)
		return failedCaller{err}
	}
	return orFailed(pc.PipelineRecv(ctx, transform, r))
}

// PipelineSend turns the call into a Recv queued like the others, so
// that it keeps its place and never blocks the caller.
func (h *heldCall) PipelineSend(ctx context.Context, transform []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	r, ret, err := sendToRecv(s)
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	pc := h.PipelineRecv(ctx, transform, r)
	return ret.Answer(s.Method, pc)
}

// sendToRecv turns a call made in this process into the Recv a server
// takes: its arguments placed in a message of their own, and a Returner
// that keeps the results for the Answer.
func sendToRecv(s capnp.Send) (capnp.Recv, *capnp.StructReturner, error) {
	ret := new(capnp.StructReturner)
	r := capnp.Recv{Method: s.Method, Returner: ret, ReleaseArgs: func() {}}
	if s.PlaceArgs != nil {
		_, seg := capnp.NewMultiSegmentMessage(nil)
		args, err := capnp.NewRootStruct(seg, s.ArgsSize)
		if err == nil {
			err = s.PlaceArgs(args)
		}
		if err != nil {
			seg.Message().Release()
			return capnp.Recv{}, nil, exc.WrapError("rpcconn: place args of "+s.Method.String(), err)
		}
		r.Args = args
		r.ReleaseArgs = seg.Message().Release
	}
	return r, ret, nil
}

// settle records where the held call went (pc), or why it failed (err),
// and hands on the calls pipelined on it, in order. A nil h does
// nothing.
func (h *heldCall) settle(pc capnp.PipelineCaller, err error) {
	if h == nil {
		return
	}
	if pc == nil && err == nil {
		err = errNoPipeline
	}
	if isAnswerQueue(pc) {
		h.mu.Lock()
		if h.watched && !h.returned {
			h.pc, h.waiting = pc, true
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
	h.drain(pc, err)
}

// drain hands on the calls pipelined on h to pc, in order, or fails
// them with err, and lets later ones through.
func (h *heldCall) drain(pc capnp.PipelineCaller, err error) {
	for {
		h.mu.Lock()
		q := h.queue
		h.queue = nil
		if len(q) == 0 {
			h.done, h.pc, h.err = true, pc, err
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		for _, x := range q {
			if pc == nil {
				x.r.Reject(err)
				x.h.settle(nil, err)
				continue
			}
			x.h.settle(pc.PipelineRecv(x.ctx, x.transform, x.r), nil)
		}
	}
}

// A failedCaller fails every call pipelined on it with err. It stands in
// for the nil PipelineCaller that some paths would return, on which
// go-capnp's AnswerQueue crashes.
type failedCaller struct{ err error }

func (f failedCaller) PipelineRecv(_ context.Context, _ []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	r.Reject(f.err)
	return f
}

func (f failedCaller) PipelineSend(_ context.Context, _ []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, f.err), func() {}
}

// orFailed returns pc, or a failedCaller if pc is nil.
func orFailed(pc capnp.PipelineCaller) capnp.PipelineCaller {
	if pc == nil {
		return failedCaller{errNoPipeline}
	}
	return pc
}

// HeldCall is the PipelineCaller of a call that waits to be delivered,
// for servers outside this package (package mp) that queue the calls
// pipelined on a running call: Hold makes one, Settle hands on what was
// pipelined on it.
type HeldCall = heldCall

// Hold returns the HeldCall of the call r, whose Returner it wraps.
func Hold(r *capnp.Recv) *HeldCall { return hold(r) }

// Settle records where the held call went (pc), or why it failed (err),
// and hands on the calls pipelined on it, in order.
func (h *heldCall) Settle(pc capnp.PipelineCaller, err error) { h.settle(pc, err) }

// FailedCaller returns a PipelineCaller that fails every call pipelined
// on it with err.
func FailedCaller(err error) capnp.PipelineCaller { return failedCaller{err} }

// ResultTarget returns the capability at transform in the results of
// the call whose Returner is ret, once the call has returned: a new
// reference, or the error a call on it fails with. It works for the
// calls a Conn delivers; for other Returners it fails.
func ResultTarget(ret capnp.Returner, transform []capnp.PipelineOp) (capnp.Client, error) {
	if h, ok := ret.(heldReturner); ok {
		ret = h.Returner
	}
	a, ok := ret.(*answer)
	if !ok {
		return capnp.Client{}, exc.New(exc.Failed, "rpcconn", "pipelined call after its target returned, on a call not delivered by a connection")
	}
	c := a.c
	lc := c.lock()
	defer lc.unlock()
	if a.state == aRunning {
		return capnp.Client{}, exc.New(exc.Failed, "rpcconn", "pipelined call on an answer that has not returned")
	}
	return a.target(lc, transform)
}
