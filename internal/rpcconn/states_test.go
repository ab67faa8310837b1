package rpcconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// The transition tables, written out again as the doc comments in
// states.go give them: each test walks every pair of states, checks that
// exactly these are allowed, applies each allowed one through the
// transition method (no fault), and applies every disallowed one too (the
// state stays, a fault is recorded).

type move[S ~uint8] struct{ from, to S }

// walkStates checks canMove against allowed for every pair below n, and that
// the transition method apply accepts the allowed pairs and refuses the
// others.
func walkStates[S interface {
	~uint8
	fmt.Stringer
}](t *testing.T, n S, allowed []move[S], canMove func(from, to S) bool, apply func(c *lockedConn, from, to S) S) {
	t.Helper()
	ok := make(map[move[S]]bool)
	for _, m := range allowed {
		ok[m] = true
	}
	conn := &Conn{}
	faultOnPurpose(conn)
	c := (*lockedConn)(conn)
	for from := S(0); from < n; from++ {
		for to := S(0); to < n; to++ {
			m := move[S]{from, to}
			if got := canMove(from, to); got != ok[m] {
				t.Errorf("%v -> %v: allowed = %v, want %v", from, to, got, ok[m])
			}
			c.fault = nil
			after := apply(c, from, to)
			switch {
			case ok[m] && (c.fault != nil || after != to):
				t.Errorf("%v -> %v refused (now %v, fault %v)", from, to, after, c.fault)
			case !ok[m] && (c.fault == nil || after != from):
				t.Errorf("%v -> %v not refused (now %v, fault %v)", from, to, after, c.fault)
			}
			if !ok[m] && c.fault != nil && !strings.Contains(c.fault.Error(), "not allowed") {
				t.Errorf("%v -> %v: fault %q", from, to, c.fault)
			}
		}
		if s := from.String(); strings.Contains(s, "(") {
			t.Errorf("state %d has no name: %s", uint8(from), s)
		}
	}
	// Out of range: refused.
	if canMove(n, 0) || canMove(0, n) {
		t.Errorf("a state out of range may move")
	}
}

func TestQuestionStates(t *testing.T) {
	walkStates(t, numQuestionStates, []move[questionState]{
		{qOpen, qCanceled}, {qOpen, qReturned}, {qOpen, qFreed},
		{qCanceled, qCanceledFreed},
		{qReturned, qFreed},
	}, questionState.canMove, func(c *lockedConn, from, to questionState) questionState {
		q := &question{state: from}
		q.to(c, to)
		return q.state
	})
	// The predicates the code reads.
	for s := range numQuestionStates {
		if got, want := s.returned(), s == qReturned || s == qFreed || s == qCanceledFreed; got != want {
			t.Errorf("%v.returned() = %v", s, got)
		}
		if got, want := s.canceled(), s == qCanceled || s == qCanceledFreed; got != want {
			t.Errorf("%v.canceled() = %v", s, got)
		}
		if got, want := s.freed(), s == qFreed || s == qCanceledFreed; got != want {
			t.Errorf("%v.freed() = %v", s, got)
		}
	}
}

func TestQuestionHolds(t *testing.T) {
	walkStates(t, numQuestionHolds, []move[questionHold]{
		{holdCounted, holdReleased}, {holdReleased, holdDone},
	}, questionHold.canMove, func(c *lockedConn, from, to questionHold) questionHold {
		q := &question{hold: from}
		q.toHold(c, to)
		return q.hold
	})
}

func TestAnswerStates(t *testing.T) {
	walkStates(t, numAnswerStates, []move[answerState]{
		{aRunning, aDraining}, {aRunning, aReturned},
		{aDraining, aReturned}, {aDraining, aDrainingRemoved},
		{aDrainingRemoved, aRemoved},
		{aReturned, aRemoved},
	}, answerState.canMove, func(c *lockedConn, from, to answerState) answerState {
		a := &answer{state: from}
		a.to(c, to)
		return a.state
	})
	for s := range numAnswerStates {
		if got, want := s.returned(), s == aReturned || s == aRemoved; got != want {
			t.Errorf("%v.returned() = %v", s, got)
		}
		if got, want := s.draining(), s == aDraining || s == aDrainingRemoved; got != want {
			t.Errorf("%v.draining() = %v", s, got)
		}
		if got, want := s.removed(), s == aDrainingRemoved || s == aRemoved; got != want {
			t.Errorf("%v.removed() = %v", s, got)
		}
	}
}

func TestAnswerMsgs(t *testing.T) {
	walkStates(t, numAnswerMsgs, []move[answerMsg]{
		{msgHeld, msgWritten}, {msgHeld, msgReleased}, {msgWritten, msgReleased},
	}, answerMsg.canMove, func(c *lockedConn, from, to answerMsg) answerMsg {
		a := &answer{msg: from}
		a.toMsg(c, to)
		return a.msg
	})
}

func TestAnswerTails(t *testing.T) {
	walkStates(t, numAnswerTails, []move[answerTail]{
		{tailKept, tailTaken},
	}, answerTail.canMove, func(c *lockedConn, from, to answerTail) answerTail {
		a := &answer{tail: from}
		a.toTail(c, to)
		return a.tail
	})
}

// A transition refused on a live connection ends it, once c.mu is let
// go, as a bug does: an Abort saying "internal error" to the peer, and
// Err says so here.
func TestStateFaultEndsConnection(t *testing.T) {
	cl, srv := connPair(t, nil, nil)
	faultOnPurpose(cl)
	lc := cl.lock()
	q := &question{state: qFreed}
	q.to(lc, qOpen)
	if q.state != qFreed {
		t.Errorf("a refused transition changed the state to %v", q.state)
	}
	lc.unlock()
	for _, c := range []*Conn{cl, srv} {
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end after a refused transition")
		}
	}
	var pe *ProtocolError
	if !errors.As(cl.Err(), &pe) || !strings.Contains(pe.Reason, "internal error") || !strings.Contains(pe.Reason, "freed -> open") {
		t.Errorf("Err = %v; want an internal error naming the transition", cl.Err())
	}
	if !errors.As(srv.Err(), &pe) || !pe.Remote {
		t.Errorf("the peer's Err = %v; want our Abort", srv.Err())
	}
}

// gateHook's first Recv waits until gate is closed, after saying so on
// entered; it answers every call with empty results.
type gateHook struct {
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (h *gateHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	h.once.Do(func() {
		close(h.entered)
		<-h.gate
	})
	r.ReleaseArgs()
	if _, err := r.Returner.AllocResults(capnp.ObjectSize{}); err != nil {
		r.Returner.PrepareReturn(err)
	}
	r.Returner.Return()
	return failedCaller{errNoPipeline}
}

func (h *gateHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, errNoPipeline), func() {}
}
func (h *gateHook) Brand() capnp.Brand { return capnp.Brand{} }
func (h *gateHook) Shutdown()          {}
func (h *gateHook) String() string     { return "gateHook" }

// The peer's Finish for an answer that is handing on the calls pipelined
// on it (aDraining -> aDrainingRemoved -> aRemoved): the answer leaves
// the table at the Finish, its Return still goes out once the pipelined
// call is handed on, and the connection carries on.
func TestFinishWhileDraining(t *testing.T) {
	hook := &gateHook{entered: make(chan struct{}), gate: make(chan struct{})}
	release := make(chan struct{})
	c, p := newRawServer(t, capnp.NewClient(server.New([]server.Method{{
		Method: makeHookMethod,
		Impl: func(ctx context.Context, call *server.Call) error {
			<-release
			res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
			if err != nil {
				return err
			}
			cl := capnp.NewClient(hook)
			return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(cl)).ToPtr())
		}},
	}, nil, nil)))
	var openGate, openRelease sync.Once
	t.Cleanup(func() {
		openRelease.Do(func() { close(release) })
		openGate.Do(func() { close(hook.gate) })
	})
	e := p.bootstrap(0)
	p.send(callTo(1, importedCap(e), makeHookMethod.InterfaceID, 0, nil))
	p.send(callTo(2, promisedAnswer(1, 0), 0xdeadbeef05, 0, nil))
	// Call 2 waits in answer 1 until it returns.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		a := c.answers[1]
		queued := a != nil && len(a.pipeline) == 1
		c.mu.Unlock()
		if queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("call 2 was not queued in answer 1")
		}
	}
	openRelease.Do(func() { close(release) })
	select {
	case <-hook.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the pipelined call was not handed on")
	}
	c.mu.Lock()
	state := c.answers[1].state
	c.mu.Unlock()
	if state != aDraining {
		t.Fatalf("answer 1 is %v while its pipelined call is handed on, want draining", state)
	}
	p.send(finishKeep(1))
	// A bootstrap answered after the Finish: the Finish was handled.
	p.send(func(m rpccp.Message) {
		b, _ := m.NewBootstrap()
		b.SetQuestionId(3)
	})
	for got := false; !got; {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		got = r.AnswerId() == 3
	}
	c.mu.Lock()
	_, inTable := c.answers[1]
	c.mu.Unlock()
	if inTable {
		t.Error("answer 1 still in the table after the peer's Finish")
	}
	openGate.Do(func() { close(hook.gate) })
	got := map[uint32]bool{}
	for !got[1] || !got[2] {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		got[r.AnswerId()] = true
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}
