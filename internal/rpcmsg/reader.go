package rpcmsg

import (
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Reader reads, for a test, the messages the other side sends: each read
// must finish within a time limit, and Expect fails the test when what
// it waits for does not come.
type Reader struct {
	tb      testing.TB
	conn    net.Conn
	timeout time.Duration
	dec     *capnp.Decoder
}

// NewReader reads conn for tb. Each read must finish within timeout; a
// message may be up to maxSize bytes (0: go-capnp's default).
func NewReader(tb testing.TB, conn net.Conn, timeout time.Duration, maxSize uint64) *Reader {
	dec := capnp.NewDecoder(conn)
	if maxSize > 0 {
		dec.MaxMessageSize = maxSize
	}
	return &Reader{tb: tb, conn: conn, timeout: timeout, dec: dec}
}

// Recv reads the next message, or returns the error that ends the
// stream (or the timeout's).
func (r *Reader) Recv() (rpccp.Message, error) {
	r.conn.SetReadDeadline(time.Now().Add(r.timeout))
	msg, err := r.dec.Decode()
	if err != nil {
		return rpccp.Message{}, err
	}
	return rpccp.ReadRootMessage(msg)
}

// Expect reads messages until one of kind w arrives and returns it. An
// Abort first, or the end of the stream, fails the test (naming the
// Abort's reason).
func (r *Reader) Expect(w rpccp.Message_Which) rpccp.Message {
	r.tb.Helper()
	for {
		m, err := r.Recv()
		if err != nil {
			r.tb.Fatalf("waiting for %v: %v", w, err)
		}
		if m.Which() == w {
			return m
		}
		if m.Which() == rpccp.Message_Which_abort {
			r.tb.Fatalf("waiting for %v: abort %q", w, AbortReason(m))
		}
	}
}

// AbortReason returns the reason of an Abort message ("" for a message
// of another kind).
func AbortReason(m rpccp.Message) string {
	if m.Which() != rpccp.Message_Which_abort {
		return ""
	}
	e, _ := m.Abort()
	r, _ := e.Reason()
	return r
}
