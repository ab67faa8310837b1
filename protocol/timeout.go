package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrMessageTimeout is wrapped by the error that ends a connection whose
// peer left a message incomplete for longer than Options.MessageTimeout.
var ErrMessageTimeout = errors.New("protocol: peer left a message incomplete")

// timeoutConn enforces Options.MessageTimeout under the RPC connection's
// reader. It follows the stream framing of the bytes it passes on, so it
// knows when a message is partly received; only then do its reads get a
// deadline, for what is left of the timeout. The time counted is the time
// spent waiting for the peer in Read: a reader that pauses between
// messages (back-pressure) does not use up the peer's allowance. An idle
// peer, between messages, is never dropped.
//
// The read deadline is armed lazily: once set, it stays until it fires,
// and is re-armed only then, if the message in progress still has
// allowance left (the time counted is then exact: a deadline armed for an
// earlier read can only be earlier than this read's, never later). A
// deadline that fires between messages is cleared. So a connection sets
// its deadline about once per timeout period, not twice per read.
//
// The owner's read deadlines (SetReadDeadline: the RPC connection pulls
// a goroutine out of Read with one in the past, to let another read) take
// precedence: while one is set, Read arms none of its own, and a Read it
// ends returns its error.
//
// Read is called by one goroutine at a time (whichever reads the RPC
// connection); the other methods pass through.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
	spent   time.Duration // waiting in Read for the message in progress

	dmu   sync.Mutex // orders the read deadlines of Read and of the owner
	armed bool       // a read deadline of Read's own is set
	owner bool       // the owner's read deadline is set

	// Framing state: the word being gathered (the segment count, then
	// each segment's size), and the bytes still to skip (padding and
	// segments) once the header is complete.
	word     [4]byte
	wordN    int
	inHeader bool   // between the count and the last size
	sizes    uint64 // segment sizes still to read
	body     uint64 // bytes of padding and segments announced so far
	skip     uint64
}

func newTimeoutConn(nc net.Conn, timeout time.Duration) *timeoutConn {
	return &timeoutConn{Conn: nc, timeout: timeout}
}

// midMessage reports whether the bytes passed on so far end inside a
// message.
func (c *timeoutConn) midMessage() bool { return c.wordN > 0 || c.inHeader || c.skip > 0 }

func (c *timeoutConn) Read(p []byte) (int, error) {
	for {
		mid := c.midMessage()
		var start time.Time
		if mid {
			left := c.timeout - c.spent
			if left <= 0 {
				return 0, c.timeoutErr()
			}
			start = time.Now()
			c.arm(start.Add(left))
		}
		n, err := c.Conn.Read(p)
		if mid {
			c.spent += time.Since(start)
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			again, serr := c.expired()
			if serr != nil {
				return 0, serr
			}
			if again {
				continue
			}
		}
		c.scan(p[:n])
		return n, err
	}
}

// arm sets Read's own deadline at d, unless one is set already or the
// owner's is.
func (c *timeoutConn) arm(d time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.armed && !c.owner && c.Conn.SetReadDeadline(d) == nil {
		c.armed = true
	}
}

// expired deals with a Read that a deadline ended: if it was Read's own
// (an earlier one fired), it is cleared and Read carries on (again) if
// the message in progress, if any, has time left; the owner's, Read
// returns its error.
func (c *timeoutConn) expired() (again bool, err error) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.owner || !c.armed {
		return false, nil
	}
	c.armed = false
	if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
		return false, err
	}
	return true, nil
}

// SetReadDeadline sets the owner's read deadline (none: t zero), which
// replaces Read's own until cleared.
func (c *timeoutConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.owner = !t.IsZero()
	c.armed = false
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read deadline as the owner's.
func (c *timeoutConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// SyscallConn passes the socket's descriptor on, so that the RPC
// connection may write to it directly (it reads only through Read).
func (c *timeoutConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("protocol: connection has no file descriptor")
}

func (c *timeoutConn) timeoutErr() error {
	return fmt.Errorf("%w: no whole message within %s of its first byte", ErrMessageTimeout, c.timeout)
}

// scan follows the framing through b. A message that ends in b resets the
// time spent: the next one starts afresh.
func (c *timeoutConn) scan(b []byte) {
	for len(b) > 0 {
		if c.skip > 0 {
			n := min(uint64(len(b)), c.skip)
			c.skip -= n
			b = b[n:]
			if c.skip == 0 {
				c.spent = 0 // a message ended
			}
			continue
		}
		n := copy(c.word[c.wordN:], b)
		c.wordN += n
		b = b[n:]
		if c.wordN < 4 {
			return
		}
		c.wordN = 0
		v := uint64(binary.LittleEndian.Uint32(c.word[:]))
		if !c.inHeader {
			// The segment count, less one; the header is padded to
			// whole words.
			c.inHeader, c.sizes, c.body = true, v+1, 0
			if c.sizes%2 == 0 {
				c.body = 4
			}
			continue
		}
		c.body = min(c.body+8*v, 1<<62) // garbage may announce more
		if c.sizes--; c.sizes == 0 {
			c.inHeader, c.skip = false, c.body
			if c.skip == 0 {
				c.spent = 0 // an empty message
			}
		}
	}
}

// ErrWriteTimeout is wrapped by the error that ends a connection whose
// peer took no byte of a write for longer than Options.WriteTimeout.
var ErrWriteTimeout = errors.New("protocol: peer stopped reading")

// writeTimeoutConn enforces Options.WriteTimeout under the RPC
// connection's writer. Every Write gets a deadline of the timeout from
// now; when it passes after some bytes went out, the rest is written
// with a fresh deadline, so only a peer that takes nothing at all for the
// whole timeout fails the write.
//
// The RPC connection sets a write deadline of its own when it ends (to
// bound the sending of an Abort): that one is kept, and no deadline later
// than it is set from then on.
type writeTimeoutConn struct {
	net.Conn
	timeout time.Duration

	mu    sync.Mutex // orders the deadlines set by Write and by the owner
	owner time.Time  // the last deadline set through SetWriteDeadline
}

func newWriteTimeoutConn(nc net.Conn, timeout time.Duration) *writeTimeoutConn {
	return &writeTimeoutConn{Conn: nc, timeout: timeout}
}

func (c *writeTimeoutConn) Write(p []byte) (int, error) {
	n := 0
	for {
		if err := c.arm(); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p[n:])
		n += m
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || c.ownerPassed() {
			return n, err
		}
		if m == 0 {
			return n, fmt.Errorf("%w: it took no byte for %s", ErrWriteTimeout, c.timeout)
		}
	}
}

// arm sets the deadline for the next write: the timeout from now, or the
// owner's deadline if that is earlier.
func (c *writeTimeoutConn) arm() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := time.Now().Add(c.timeout)
	if !c.owner.IsZero() && c.owner.Before(d) {
		d = c.owner
	}
	return c.Conn.SetWriteDeadline(d)
}

// ownerPassed reports whether the owner's deadline has passed.
func (c *writeTimeoutConn) ownerPassed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.owner.IsZero() && !time.Now().Before(c.owner)
}

func (c *writeTimeoutConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owner = t
	if t.IsZero() {
		t = time.Now().Add(c.timeout)
	}
	return c.Conn.SetWriteDeadline(t)
}

// SyscallConn passes the socket's descriptor on, as timeoutConn does: the
// RPC connection writes small messages with one non-blocking write(2)
// from the calling goroutine, which never waits and so needs no
// deadline; what such a write leaves goes through Write.
func (c *writeTimeoutConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("protocol: connection has no file descriptor")
}

func (c *writeTimeoutConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
