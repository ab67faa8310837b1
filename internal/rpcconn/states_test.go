package rpcconn

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
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
	c := (*lockedConn)(&Conn{})
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

// A transition refused on a live connection ends it, once c.mu is let
// go, as a bug does: an Abort saying "internal error" to the peer, and
// Err says so here.
func TestStateFaultEndsConnection(t *testing.T) {
	cl, srv := connPair(t, nil, nil)
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
