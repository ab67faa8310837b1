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

func (s questionState) String() string { return questionStates.name(s) }

// questionMoves[from] has bit to set for each transition allowed.
var questionMoves = [numQuestionStates]uint16{
	qOpen:     1<<qCanceled | 1<<qReturned | 1<<qFreed,
	qCanceled: 1 << qCanceledFreed,
	qReturned: 1 << qFreed,
}

func (s questionState) canMove(to questionState) bool { return questionStates.canMove(s, to) }

var questionStates = stateTable[questionState]{"question", questionStateNames[:], questionMoves[:]}

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
func (q *question) to(c *lockedConn, s questionState) { questionStates.move(c, q.id, &q.state, s) }

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

func (s questionHold) String() string { return questionHolds.name(s) }

var questionHoldMoves = [numQuestionHolds]uint16{
	holdCounted:  1 << holdReleased,
	holdReleased: 1 << holdDone,
}

func (s questionHold) canMove(to questionHold) bool { return questionHolds.canMove(s, to) }

var questionHolds = stateTable[questionHold]{"question hold", questionHoldNames[:], questionHoldMoves[:]}

// toHold moves q's hold to s; see questionHold.
func (q *question) toHold(c *lockedConn, s questionHold) { questionHolds.move(c, q.id, &q.hold, s) }

// A stateTable is one lifecycle's: the names of its states and, in
// moves[from], a bit (1<<to) for each transition allowed.
type stateTable[S ~uint8] struct {
	what  string // what the states are of, for faults: "answer message"
	names []string
	moves []uint16
}

func (t *stateTable[S]) name(s S) string {
	if int(s) < len(t.names) {
		return t.names[s]
	}
	return fmt.Sprintf("%s state %d", t.what, uint8(s))
}

func (t *stateTable[S]) canMove(from, to S) bool {
	return int(from) < len(t.moves) && int(to) < len(t.moves) && t.moves[from]&(1<<to) != 0
}

// move sets *cur, the state of the object id, to to if the table allows
// it, and else records the fault (stateFault) and leaves *cur as it is.
func (t *stateTable[S]) move(c *lockedConn, id uint32, cur *S, to S) {
	if !t.canMove(*cur, to) {
		c.stateFault(t.what, id, t.name(*cur), t.name(to))
		return
	}
	*cur = to
}

// stateFault records a transition the tables do not allow, for unlock to
// report once c.mu is let go (the first one only: the connection ends).
func (c *lockedConn) stateFault(what string, id uint32, from, to string) {
	err := fmt.Errorf("rpcconn: %s %d: transition %s -> %s not allowed", what, id, from, to)
	if testStateFault != nil {
		testStateFault(c.conn(), err)
	}
	if c.fault == nil {
		c.fault = err
	}
}

// testStateFault, set by tests only, sees every refused transition (the
// tests fail on those they did not make on purpose).
var testStateFault func(*Conn, error)

// answerState is where an answer (a call from the peer) stands.
//
//	state             meaning
//	aRunning          delivered; its Return has not run
//	aDraining         its Return ran and hands on the calls pipelined on
//	                  it; the Return message goes out once they are
//	aDrainingRemoved  aDraining, and the peer's Finish took it out of the
//	                  table meanwhile
//	aReturned         its Return message is queued (or the connection was
//	                  ending); in the table until the peer's Finish
//	aRemoved          out of the table: the ID is the peer's again
//
//	from              to                trigger
//	aRunning          aDraining         Return, with calls pipelined on it
//	aRunning          aReturned         Return, with none (or at the end)
//	aDraining         aReturned         Return, once they are handed on
//	aDraining         aDrainingRemoved  the peer's Finish (handleFinish)
//	aDrainingRemoved  aRemoved          Return, once they are handed on
//	aReturned         aRemoved          removeAnswer: the peer's Finish,
//	                                    or none needed (noFinishNeeded)
//
// aRemoved is final. The peer's Finish is a flag beside the state
// (answer.finished): it may come in any state but the last, and a second
// one is a protocol error, not a transition.
type answerState uint8

const (
	aRunning answerState = iota
	aDraining
	aDrainingRemoved
	aReturned
	aRemoved
	numAnswerStates
)

var answerStateNames = [numAnswerStates]string{"running", "draining", "draining-removed", "returned", "removed"}

func (s answerState) String() string { return answerStates.name(s) }

var answerMoves = [numAnswerStates]uint16{
	aRunning:         1<<aDraining | 1<<aReturned,
	aDraining:        1<<aReturned | 1<<aDrainingRemoved,
	aDrainingRemoved: 1 << aRemoved,
	aReturned:        1 << aRemoved,
}

func (s answerState) canMove(to answerState) bool { return answerStates.canMove(s, to) }

var answerStates = stateTable[answerState]{"answer", answerStateNames[:], answerMoves[:]}

// returned reports whether the answer's Return message is queued (or the
// connection was ending when it returned).
func (s answerState) returned() bool { return s == aReturned || s == aRemoved }

// draining reports whether the answer hands on the calls pipelined on it.
func (s answerState) draining() bool { return s == aDraining || s == aDrainingRemoved }

// removed reports whether the answer is out of the table.
func (s answerState) removed() bool { return s == aDrainingRemoved || s == aRemoved }

// to moves a to s; see answerState.
func (a *answer) to(c *lockedConn, s answerState) { answerStates.move(c, a.id, &a.state, s) }

// answerMsg is what became of an answer's Return message (answer.ret,
// or for a bare Return the template).
//
//	from         to           trigger
//	msgHeld      msgWritten   the writer is done with it (onSent), or it
//	                          is never written (the end; a tail call's
//	                          results, kept: keepResults)
//	msgHeld      msgReleased  given up at once: a bare Return, an
//	                          exception or a canceled Return built apart,
//	                          a tail call's error, or the end
//	msgWritten   msgReleased  releasableMsg: written, and nothing needs
//	                          the results any more (finished or removed,
//	                          no calls being handed on)
type answerMsg uint8

const (
	msgHeld answerMsg = iota
	msgWritten
	msgReleased
	numAnswerMsgs
)

var answerMsgNames = [numAnswerMsgs]string{"held", "written", "released"}

func (s answerMsg) String() string { return answerMsgs.name(s) }

var answerMsgMoves = [numAnswerMsgs]uint16{
	msgHeld:    1<<msgWritten | 1<<msgReleased,
	msgWritten: 1 << msgReleased,
}

func (s answerMsg) canMove(to answerMsg) bool { return answerMsgs.canMove(s, to) }

var answerMsgs = stateTable[answerMsg]{"answer message", answerMsgNames[:], answerMsgMoves[:]}

// toMsg moves a's Return message to s; see answerMsg.
func (a *answer) toMsg(c *lockedConn, s answerMsg) { answerMsgs.move(c, a.id, &a.msg, s) }

// answerTail says where an answer's results go (tail calls, yourself.go).
//
//	from      to         trigger
//	tailKept  tailTaken  a Return.takeFromOtherQuestion of the peer's
//	                     named the answer (takeFromOther)
//
// tailNone (results to the caller, as usual) and tailKept
// (sendResultsTo.yourself: kept here) are set when the call arrives.
type answerTail uint8

const (
	tailNone answerTail = iota
	tailKept
	tailTaken
	numAnswerTails
)

var answerTailNames = [numAnswerTails]string{"none", "kept", "taken"}

func (s answerTail) String() string { return answerTails.name(s) }

var answerTailMoves = [numAnswerTails]uint16{
	tailKept: 1 << tailTaken,
}

func (s answerTail) canMove(to answerTail) bool { return answerTails.canMove(s, to) }

var answerTails = stateTable[answerTail]{"answer tail", answerTailNames[:], answerTailMoves[:]}

// toTail moves a's tail to s; see answerTail.
func (a *answer) toTail(c *lockedConn, s answerTail) { answerTails.move(c, a.id, &a.tail, s) }
