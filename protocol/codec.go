package protocol

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// ErrMessageTimeout is wrapped by the error that ends a connection whose
// peer left a message incomplete for longer than Options.MessageTimeout.
var ErrMessageTimeout = errors.New("protocol: peer left a message incomplete")

// codec frames Cap'n Proto messages on the connection's socket for
// go-capnp's transport.New. It exists because transport.NewStream cannot
// bound the size of a received message, and because it is the one place
// that sees every message: it records why the stream ended, it drops a
// peer that leaves a message incomplete (Options.MessageTimeout), and with
// DebugCalls it times calls from their Call to their Return.
//
// go-capnp calls Decode from one goroutine (its reader) and Encode from
// another (its sender), never concurrently with themselves; Close may come
// from anywhere, any number of times.
type codec struct {
	conn    *Conn
	nc      net.Conn
	br      *bufio.Reader // what dec reads from
	dec     *capnp.Decoder
	enc     *capnp.Encoder
	timeout time.Duration // for one message from its first byte; 0: none
	log     *callLog      // nil unless DebugCalls

	closeOnce sync.Once
}

func newCodec(c *Conn, nc net.Conn, maxSize uint64, timeout time.Duration, log *callLog) *codec {
	br := bufio.NewReader(nc)
	dec := capnp.NewDecoder(br)
	dec.MaxMessageSize = maxSize
	return &codec{conn: c, nc: nc, br: br, dec: dec, enc: capnp.NewEncoder(nc), timeout: timeout, log: log}
}

func (k *codec) Decode() (*capnp.Message, error) {
	msg, err := k.decode()
	var m rpccp.Message
	if err == nil {
		if n := msg.NumSegments(); n > maxSegments {
			err = fmt.Errorf("decode: message has %d segments, more than %d", n, maxSegments)
		} else if m, err = rpccp.ReadRootMessage(msg); err != nil {
			err = fmt.Errorf("decode: read root: %w", err)
		}
		if err != nil {
			msg.Release()
		}
	}
	if err != nil {
		if k.conn.receiveFailed(err) {
			return nil, quietError{err}
		}
		return nil, err
	}
	switch m.Which() {
	case rpccp.Message_Which_abort:
		reason := "(unreadable)"
		if e, err := m.Abort(); err == nil {
			if r, err := e.Reason(); err == nil {
				reason = r
			}
		}
		k.conn.peerAborted(reason)
	case rpccp.Message_Which_call:
		if k.log != nil {
			if call, err := m.Call(); err == nil {
				k.log.start(&k.log.served, call)
			}
		}
	case rpccp.Message_Which_return:
		if k.log != nil {
			if ret, err := m.Return(); err == nil {
				k.log.finish(&k.log.made, "call made", ret)
			}
		}
	}
	return msg, nil
}

// decode reads one message. With a timeout, it first waits for the
// message's first byte with no deadline, so that an idle peer is never
// dropped, and then gives the whole message k.timeout to arrive. The read
// deadline is only ever touched here, by the one reading goroutine.
func (k *codec) decode() (*capnp.Message, error) {
	if k.timeout <= 0 {
		return k.dec.Decode()
	}
	if _, err := k.br.Peek(1); err != nil {
		return nil, err
	}
	if err := k.nc.SetReadDeadline(time.Now().Add(k.timeout)); err != nil {
		// A net.Conn without deadlines (none of ours): no timeout.
		return k.dec.Decode()
	}
	msg, err := k.dec.Decode()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%w: no whole message within %s of its first byte", ErrMessageTimeout, k.timeout)
	}
	if err != nil {
		return nil, err
	}
	if err := k.nc.SetReadDeadline(time.Time{}); err != nil {
		msg.Release()
		return nil, err
	}
	return msg, nil
}

func (k *codec) Encode(msg *capnp.Message) error {
	if k.log == nil {
		return k.enc.Encode(msg)
	}
	var made *rpccp.Call
	if m, err := rpccp.ReadRootMessage(msg); err == nil {
		switch m.Which() {
		case rpccp.Message_Which_call:
			// Record before sending: the Return may arrive before
			// Encode returns.
			if call, err := m.Call(); err == nil {
				k.log.start(&k.log.made, call)
				made = &call
			}
		case rpccp.Message_Which_return:
			if ret, err := m.Return(); err == nil {
				k.log.finish(&k.log.served, "call served", ret)
			}
		}
	}
	err := k.enc.Encode(msg)
	if err != nil && made != nil {
		k.log.failed(made.QuestionId(), err)
	}
	return err
}

// Close closes the socket. go-capnp closes the transport once the
// connection has ended, which is after Conn.Close already closed it.
func (k *codec) Close() error {
	err := net.ErrClosed
	k.closeOnce.Do(func() { err = k.nc.Close() })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
