package interop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A wire sits between the Go side's connection and the socket to the C++
// peer: it records the messages the Go side writes, and can hold back the
// ones it reads, a whole frame at a time. The generated path's calls
// block until they return, so a test that issues calls from goroutines
// learns from the wire that each has been sent before it issues the
// next, and a test that needs the peer's answers to wait holds them.
//
// The connection reads through a bufio.Reader: it asks the wire for more
// only once the frames it had are handled, so a wire that hands out one
// frame per Read knows when the connection has handled one.
type wire struct {
	net.Conn // the socket; a wrapper has no SyscallConn, so the connection writes through Write

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of the state below
	sent    []wireMsg     // the messages written, in order
	got     []wireMsg     // the messages handed out, in order
	wpart   []byte        // the start of a frame written in part
	rtmp    []byte        // the reader's buffer for the socket's bytes
	rbuf    []byte        // bytes read from the socket and not yet handed out
	rerr    error         // the socket's read error, once rbuf is empty
	out     []byte        // the rest of the frame being handed out
	reads   int           // calls of Read so far
	hold    bool          // hand out no further frame
	until   func(wireMsg) bool
	matched int // 0; 1: the frame until matched is in out; 2: handed out, at reads == drained
	drained int
	closed  bool
}

// wireMsg is what the tests look at in a message.
type wireMsg struct {
	which     rpccp.Message_Which
	question  uint32 // Call.questionId, Return.answerId, Resolve.promiseId
	iface     uint64 // of a Call
	method    uint16 // of a Call
	pipelined bool   // a Call to a promised answer
	onAnswer  uint32 // the question whose answer a pipelined Call is to
}

func newWire(nc net.Conn) *wire { return &wire{Conn: nc, changed: make(chan struct{})} }

// note wakes whoever waits for a change; w.mu is held.
func (w *wire) note() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *wire) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wpart = append(w.wpart, p[:n]...)
	for {
		size, ok := frameSize(w.wpart)
		if !ok {
			break
		}
		w.sent = append(w.sent, parseFrame(w.wpart[:size]))
		w.wpart = append(w.wpart[:0], w.wpart[size:]...)
	}
	w.note()
	return n, err
}

func (w *wire) Read(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reads++
	w.note()
	for {
		if len(w.out) > 0 {
			n := copy(p, w.out)
			w.out = w.out[n:]
			if len(w.out) == 0 && w.matched == 1 {
				w.matched, w.drained = 2, w.reads
				w.note()
			}
			return n, nil
		}
		if size, ok := frameSize(w.rbuf); ok {
			if w.hold && !w.closed {
				ch := w.changed
				w.mu.Unlock()
				<-ch
				w.mu.Lock()
				continue
			}
			w.out = append([]byte(nil), w.rbuf[:size]...)
			w.rbuf = append(w.rbuf[:0], w.rbuf[size:]...)
			m := parseFrame(w.out)
			w.got = append(w.got, m)
			if w.until != nil && w.until(m) {
				w.until, w.hold, w.matched = nil, true, 1
			}
			continue
		}
		if w.rerr != nil {
			if len(w.rbuf) > 0 { // a frame cut short: hand it out as it is
				w.out, w.rbuf = w.rbuf, nil
				continue
			}
			return 0, w.rerr
		}
		if w.rtmp == nil {
			w.rtmp = make([]byte, 64<<10)
		}
		w.mu.Unlock()
		n, err := w.Conn.Read(w.rtmp)
		w.mu.Lock()
		w.rbuf = append(w.rbuf, w.rtmp[:n]...)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A read deadline of the connection's own (its message
			// timeout): for the caller to see, not the end.
			return 0, err
		}
		w.rerr = err
	}
}

func (w *wire) Close() error {
	w.mu.Lock()
	w.closed = true
	w.note()
	w.mu.Unlock()
	return w.Conn.Close()
}

// holdReads stops handing out frames: what the peer sends waits.
func (w *wire) holdReads() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hold, w.until, w.matched = true, nil, 0
	w.note()
}

// openReads hands out every frame from now on.
func (w *wire) openReads() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hold, w.until, w.matched = false, nil, 0
	w.note()
}

// passUntil hands out the frames the peer sent until one that matches,
// waits until the connection has handled it, and holds reads again.
func (w *wire) passUntil(t *testing.T, what string, match func(wireMsg) bool) {
	t.Helper()
	w.mu.Lock()
	w.hold, w.until, w.matched = false, match, 0
	w.note()
	w.mu.Unlock()
	w.await(t, what+" handled", func() bool { return w.matched == 2 && w.reads > w.drained })
}

// sentMatching returns the messages written so far that match.
func (w *wire) sentMatching(match func(wireMsg) bool) []wireMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ms []wireMsg
	for _, m := range w.sent {
		if match(m) {
			ms = append(ms, m)
		}
	}
	return ms
}

// awaitSent waits until n written messages match.
func (w *wire) awaitSent(t *testing.T, what string, n int, match func(wireMsg) bool) {
	t.Helper()
	w.await(t, what, func() bool {
		k := 0
		for _, m := range w.sent {
			if match(m) {
				k++
			}
		}
		return k >= n
	})
}

// await waits until cond, called with w.mu held, holds.
func (w *wire) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok, ch := cond(), w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			w.mu.Lock()
			t.Fatalf("wire: no %s within %v; sent %v; received %v", what, patience, w.sent, w.got)
			w.mu.Unlock()
		}
	}
}

// frameSize returns the size of the frame at the start of b, if b holds
// all of it.
func frameSize(b []byte) (int, bool) {
	if len(b) < 4 {
		return 0, false
	}
	segs := int(binary.LittleEndian.Uint32(b)) + 1
	if segs > 512 {
		return len(b), true // not a frame the connection would take: hand it on
	}
	hdr := 4 + 4*segs
	hdr += hdr % 8
	if len(b) < hdr {
		return 0, false
	}
	size := hdr
	for i := range segs {
		size += 8 * int(binary.LittleEndian.Uint32(b[4+4*i:]))
	}
	return size, len(b) >= size
}

// parseFrame reads what wireMsg records of the message in frame.
func parseFrame(frame []byte) wireMsg {
	msg, err := capnp.Unmarshal(frame)
	if err != nil {
		return wireMsg{which: rpccp.Message_Which_unimplemented}
	}
	root, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		return wireMsg{which: rpccp.Message_Which_unimplemented}
	}
	m := wireMsg{which: root.Which()}
	switch m.which {
	case rpccp.Message_Which_call:
		c, _ := root.Call()
		m.question, m.iface, m.method = c.QuestionId(), c.InterfaceId(), c.MethodId()
		if tgt, err := c.Target(); err == nil && tgt.Which() == rpccp.MessageTarget_Which_promisedAnswer {
			pa, _ := tgt.PromisedAnswer()
			m.pipelined, m.onAnswer = true, pa.QuestionId()
		}
	case rpccp.Message_Which_return:
		r, _ := root.Return()
		m.question = r.AnswerId()
	case rpccp.Message_Which_resolve:
		r, _ := root.Resolve()
		m.question = r.PromiseId()
	}
	return m
}

func (m wireMsg) String() string {
	switch m.which {
	case rpccp.Message_Which_call:
		to := "cap"
		if m.pipelined {
			to = fmt.Sprintf("answer %d", m.onAnswer)
		}
		return fmt.Sprintf("call %d (@%#x.%d on %s)", m.question, m.iface, m.method, to)
	case rpccp.Message_Which_return, rpccp.Message_Which_resolve:
		return fmt.Sprintf("%v %d", m.which, m.question)
	}
	return m.which.String()
}

// isCall returns a matcher of calls of method of the interface iface.
func isCall(iface uint64, method uint16) func(wireMsg) bool {
	return func(m wireMsg) bool {
		return m.which == rpccp.Message_Which_call && m.iface == iface && m.method == method
	}
}

// isReturn returns a matcher of the return of question q.
func isReturn(q uint32) func(wireMsg) bool {
	return func(m wireMsg) bool { return m.which == rpccp.Message_Which_return && m.question == q }
}

// isKind returns a matcher of messages of one kind.
func isKind(which rpccp.Message_Which) func(wireMsg) bool {
	return func(m wireMsg) bool { return m.which == which }
}
