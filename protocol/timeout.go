package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
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
// peer, between messages, has no deadline at all.
//
// Read is called by one goroutine at a time (the reader); the other
// methods pass through.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
	spent   time.Duration // waiting in Read for the message in progress
	armed   bool          // a read deadline is set

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
	if !c.midMessage() {
		if c.armed {
			c.armed = false
			if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
				return 0, err
			}
		}
		n, err := c.Conn.Read(p)
		c.scan(p[:n])
		return n, err
	}
	left := c.timeout - c.spent
	if left <= 0 {
		return 0, c.timeoutErr()
	}
	start := time.Now()
	if c.Conn.SetReadDeadline(start.Add(left)) == nil {
		c.armed = true
	}
	n, err := c.Conn.Read(p)
	c.spent += time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = c.timeoutErr()
	}
	c.scan(p[:n])
	return n, err
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
