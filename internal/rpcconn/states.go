package rpcconn

import "fmt"

// The lifecycles of questions and answers, as small state types with the
// transitions each allows. A transition goes through a method (question.to,
// answer.to, ...) that takes the lockedConn, as the states are guarded by
// c.mu; one the table does not allow is a bug of this package: it is
// refused (the state stays), and once c.mu is let go, lockedConn.unlock
// hands it to c.bug, which logs it with the stack and ends the connection
// with an Abort ("internal error"). (Not a panic under c.mu: the reader's
// recovery, c.bug, would wait for the mutex.)

// questionState is where a question stands with the peer.
//
//	state           meaning
//	qOpen           sent (or being sent); its Return is awaited
//	qCanceled       our Finish went before its Return, which is still to
//	                come: the ID stays taken until it does
//	qReturned       its Return came, or the end failed it, or it took its
//	                results from an answer of ours (yourself.go); in the
//	                table until its Finish is sent (or needs none)
//	qFreed          out of the table: the ID may be reused
//	qCanceledFreed  out of the table after qCanceled: the Return came
//
//	from       to              trigger
//	qOpen      qCanceled       cancelLocked: its context ended, or the
//	                           bootstrap capability was released
//	qOpen      qReturned       handleReturn, handleBareReturn, finishTaken;
//	                           shutdown, which fails it
//	qOpen      qFreed          sendMsg: its params could not be described
//	                           (never sent)
//	qCanceled  qCanceledFreed  its Return (handleReturn, takeFromOther,
//	                           finishTaken)
//	qReturned  qFreed          freeQuestion once settled: the Finish sent,
//	                           or none needed (noFinishNeeded)
//
// qFreed and qCanceledFreed are final. A question canceled or returned
// when the connection ends stays as it is: the table goes.
type questionState uint8

const (
	qOpen questionState = iota
	qCanceled
	qReturned
	qFreed
	qCanceledFreed
	numQuestionStates
)

var questionStateNames = [numQuestionStates]string{"open", "canceled", "returned", "freed", "canceled-freed"}

func (s questionState) String() string {
	if s < numQuestionStates {
		return questionStateNames[s]
	}
	return fmt.Sprintf("questionState(%d)", uint8(s))
}

// questionMoves[from] has bit to set for each transition allowed.
var questionMoves = [numQuestionStates]uint16{
	qOpen:     1<<qCanceled | 1<<qReturned | 1<<qFreed,
	qCanceled: 1 << qCanceledFreed,
	qReturned: 1 << qFreed,
}

func (s questionState) canMove(to questionState) bool {
	return s < numQuestionStates && to < numQuestionStates && questionMoves[s]&(1<<to) != 0
}

// returned reports whether the question's Return came (or it never went
// out: qFreed from qOpen).
func (s questionState) returned() bool {
	return s == qReturned || s == qFreed || s == qCanceledFreed
}

// canceled reports whether our Finish went before the Return: settling
// the question then kicks a direct call's caller out of Read (role.go).
func (s questionState) canceled() bool { return s == qCanceled || s == qCanceledFreed }

// freed reports whether the question is out of the table.
func (s questionState) freed() bool { return s == qFreed || s == qCanceledFreed }

// to moves q to s; see questionState.
func (q *question) to(c *lockedConn, s questionState) {
	if !q.state.canMove(s) {
		c.stateFault("question", q.id, q.state, s)
		return
	}
	q.state = s
}

// questionHold is what the question's caller holds of it: its place among
// the calls in flight (MaxCalls, MaxBytesInFlight) until the caller
// releases the answer, and, for a direct call (a Call from the pool), the
// Call itself until its caller lets go.
//
//	from          to            trigger
//	holdCounted   holdReleased  releaseBudget: the caller released the
//	                            answer (ReleaseFunc, Call.Release, a stream
//	                            call settled), or sendMsg failed
//	holdReleased  holdDone      a direct call's caller let go of the Call
//	                            (Call.Release, ReleaseKeepResults, or a
//	                            stream call settled): it goes back to the
//	                            pool once the question is freed as well
//
// A question with a go-capnp Promise stops at holdReleased.
type questionHold uint8

const (
	holdCounted questionHold = iota
	holdReleased
	holdDone
	numQuestionHolds
)

var questionHoldNames = [numQuestionHolds]string{"counted", "released", "done"}

func (s questionHold) String() string {
	if s < numQuestionHolds {
		return questionHoldNames[s]
	}
	return fmt.Sprintf("questionHold(%d)", uint8(s))
}

var questionHoldMoves = [numQuestionHolds]uint16{
	holdCounted:  1 << holdReleased,
	holdReleased: 1 << holdDone,
}

func (s questionHold) canMove(to questionHold) bool {
	return s < numQuestionHolds && to < numQuestionHolds && questionHoldMoves[s]&(1<<to) != 0
}

// toHold moves q's hold to s; see questionHold.
func (q *question) toHold(c *lockedConn, s questionHold) {
	if !q.hold.canMove(s) {
		c.stateFault("question hold", q.id, q.hold, s)
		return
	}
	q.hold = s
}

// stateFault records a transition the tables do not allow, for unlock to
// report once c.mu is let go (the first one only: the connection ends).
func (c *lockedConn) stateFault(what string, id uint32, from, to fmt.Stringer) {
	if c.fault == nil {
		c.fault = fmt.Errorf("rpcconn: %s %d: transition %v -> %v not allowed", what, id, from, to)
	}
}
