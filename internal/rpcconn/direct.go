package rpcconn

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Import is a capability hosted by the peer, as this package imports it:
// the hook of the capnp.Clients that stand for it. Package mp calls it
// directly (NewCall), without go-capnp's Promise.
type Import = importClient

// ImportOf returns the import behind cl, if cl is a capability that the
// peer of a Conn of this package hosts and is not a promise that may
// still resolve elsewhere: calls to it may then be made with
// Import.NewCall. It returns nil otherwise.
func ImportOf(cl capnp.Client) *Import {
	if !cl.IsValid() {
		return nil
	}
	snap := cl.Snapshot()
	defer snap.Release()
	if snap.IsPromise() {
		return nil
	}
	h, _ := snap.Brand().Value.(*importClient)
	return h
}

// A Call is a call to an import made without go-capnp's Promise: the
// caller builds the parameters in the Call message itself (Params),
// sends it (Send, or SendStream for a `-> stream` method), reads the
// results (Results) and then releases them (Release). The question is
// settled by the reader into the Call; nothing of go-capnp's Answer is
// involved.
type Call struct {
	c      *Conn
	imp    *importClient
	method capnp.Method
	stream bool
	msg    *capnp.Message // the Call message, until sent
	ext    *outExt        // its lent segments, if any (lend.go)
	call   rpccp.Call
	pay    rpccp.Payload
	params capnp.Struct

	q       *question // &qst once sent
	qst     question
	settled atomic.Bool // set once content and err are (signalSettled)
	rd      reader      // the caller, as it waits for the Return (role.go)
	content capnp.Ptr
	err     error

	// onReturn, for a stream call, gets its result; it runs on the
	// goroutine that settles the call and must not block.
	onReturn func(error)
}

// Calls are reused (callPool): a Call goes back to the pool once both its
// caller and the connection are done with it (question.hold holdDone, and
// question.state freed), whichever comes last, under c.mu. So a call costs no
// allocation of its own: neither the Call, nor its question, nor what its
// caller waits on.
var callPool = sync.Pool{New: func() any {
	dc := new(Call)
	dc.rd.wake = make(chan struct{}, 1)
	dc.rd.call = dc
	return dc
}}

func getCall() *Call {
	dc := callPool.Get().(*Call)
	// A token left by the call's previous use would only make its
	// caller look once more.
	select {
	case <-dc.rd.wake:
	default:
	}
	return dc
}

// recycleLocked puts dc back in the pool; neither the caller of dc nor
// the connection uses it any more.
func (dc *Call) recycleLocked(lc *lockedConn) {
	wake := dc.rd.wake
	*dc = Call{}
	dc.rd.wake = wake
	dc.rd.call = dc
	callPool.Put(dc)
}

// NewCall starts a call to method m of h, with parameters of size. The
// parameters are in Params until Send. If stream, the method is declared
// `-> stream`: it counts against the connection's stream window.
func (h *importClient) NewCall(m capnp.Method, size capnp.ObjectSize, stream bool) (*Call, error) {
	msg, call, pay, params, err := h.newCallMsg(m, size)
	if err != nil {
		return nil, err
	}
	dc := getCall()
	dc.c, dc.imp, dc.method, dc.stream = h.c, h, m, stream
	dc.msg, dc.call, dc.pay, dc.params = msg, call, pay, params
	return dc, nil
}

// Conn returns the connection the call goes through.
func (dc *Call) Conn() *Conn { return dc.c }

// Params returns the parameters to fill, until Send.
func (dc *Call) Params() capnp.Struct { return dc.params }

// Send sends the call and waits for its Return, or for ctx to end (the
// call is then canceled). It returns the call's error; on success the
// results are in Results until Release. Call Release in either case.
func (dc *Call) Send(ctx context.Context) error {
	if dc.stream {
		return errors.New("rpcconn: Send on a stream call")
	}
	msg := dc.msg
	dc.msg = nil
	q, err := dc.c.sendMsg(ctx, callTarget{imp: dc.imp}, dc.method, msg, dc.ext, dc.call, dc.pay, true, dc)
	if err != nil {
		return err
	}
	dc.q = q
	dc.c.awaitReturn(dc)
	// The caller may change the bytes it lent once Send returns.
	dc.ext.detach()
	return dc.err
}

// SendStream sends the call without waiting for its Return, once the
// connection's limits and stream window allow (or ctx ends: the error
// is then ctx's). onReturn gets the call's result when it comes; it runs
// on the connection's reader (or the goroutine ending the connection)
// and must not block. The call releases itself: do not call Release.
func (dc *Call) SendStream(ctx context.Context, onReturn func(error)) error {
	if !dc.stream {
		return errors.New("rpcconn: SendStream on a call that does not stream")
	}
	dc.onReturn = onReturn
	msg := dc.msg
	dc.msg = nil
	dc.ext.detach() // nothing waits for the write
	_, err := dc.c.sendMsg(ctx, callTarget{imp: dc.imp}, dc.method, msg, dc.ext, dc.call, dc.pay, true, dc)
	return err
}

// Results returns the results struct, after a Send that returned nil;
// it is valid until Release.
func (dc *Call) Results() capnp.Struct { return dc.content.Struct() }

// ResultsSize returns the size of the message holding the results.
func (dc *Call) ResultsSize() uint64 {
	if dc.q == nil || dc.q.result == nil {
		return 0
	}
	return msgSize(dc.q.result)
}

// Release gives back what the call holds: its message if it was never
// sent, else its results and its place among the calls in flight.
func (dc *Call) Release() {
	if dc.msg != nil {
		dc.msg.Release()
		dc.msg = nil
	}
	q := dc.q
	if q == nil {
		if dc.qst.c == nil && dc.c != nil {
			// Never sent: nothing of the connection refers to it.
			c := dc.c
			lc := c.lock()
			dc.recycleLocked(lc)
			lc.unlock()
		}
		return
	}
	dc.q = nil
	c := q.c
	lc := c.lock()
	m := q.result
	q.result = nil
	lc.releaseBudget(q)
	q.toHold(lc, holdDone)
	if q.state.freed() {
		dc.recycleLocked(lc)
	}
	lc.unlock()
	if m != nil {
		recycleRecv(m)
	}
}

// ReleaseKeepResults is Release for a caller that keeps reading the
// results (borrowed, as package mp's Borrow lets it): the call's place
// among the calls in flight is given back now, and the results message
// when the returned function is called (once; it may be dropped, leaving
// the message to the garbage collector).
func (dc *Call) ReleaseKeepResults() func() {
	q := dc.q
	if dc.msg != nil || q == nil {
		dc.Release()
		return func() {}
	}
	dc.q = nil
	c := q.c
	lc := c.lock()
	m := q.result
	q.result = nil
	lc.releaseBudget(q)
	q.toHold(lc, holdDone)
	if q.state.freed() {
		dc.recycleLocked(lc)
	}
	lc.unlock()
	if m == nil {
		return func() {}
	}
	return func() { recycleRecv(m) }
}

// settleDirect is settle for a direct call. The caller holds no lock.
// Signalling the caller (or, for a stream call, onReturn) is the last it
// does with the call.
func (q *question) settleDirect(p capnp.Ptr, err error, free bool) {
	c := q.c
	dc := q.dc
	lc := c.lock()
	lc.unwatch(q)
	if free {
		lc.freeQuestion(q)
	}
	fns := q.onReturn
	q.onReturn = nil
	q.settled = true
	kick := q.state.canceled()
	var m *capnp.Message
	var onReturn func(error)
	stream := dc.stream
	if stream {
		// Nobody reads a stream call's results: release them, and its
		// place in flight, now. Its caller is done with it (the call
		// releases itself).
		m = q.result
		q.result = nil
		lc.releaseBudget(q)
		onReturn = dc.onReturn
		q.toHold(lc, holdDone)
		if q.state.freed() {
			dc.recycleLocked(lc)
		}
	}
	lc.unlock()
	for _, f := range fns {
		f()
	}
	if stream {
		if m != nil {
			recycleRecv(m)
		}
		if onReturn != nil {
			onReturn(err)
		}
		return
	}
	dc.content, dc.err = p, err
	dc.signalSettled(kick)
}

// Conn returns the connection of the import.
func (h *importClient) Conn() *Conn { return h.c }

// SendPipelined sends the call as one whose results calls may be
// pipelined on before it returns: the Answer gives clients for the
// capabilities in its results at once (Answer.Field(...).Client()). The
// returned release gives the answer back; it does not wait for the
// Return (the answer is released once it has come). Do not call
// Release.
func (dc *Call) SendPipelined(ctx context.Context) (*capnp.Answer, func()) {
	msg := dc.msg
	dc.msg = nil
	dc.ext.detach() // nothing waits for the write
	q, err := dc.c.sendMsg(ctx, callTarget{imp: dc.imp}, dc.method, msg, dc.ext, dc.call, dc.pay, true, nil)
	if err != nil {
		return capnp.ErrorAnswer(dc.method, err), func() {}
	}
	return q.p.Answer(), q.releaseWhenDone
}

// releaseWhenDone is releaseFunc without the wait: if q has not been
// settled, its release runs once it is.
func (q *question) releaseWhenDone() {
	c := q.c
	lc := c.lock()
	if !q.settled {
		q.onReturn = append(q.onReturn, q.releaseFunc)
		lc.unlock()
		return
	}
	lc.unlock()
	q.releaseFunc()
}
