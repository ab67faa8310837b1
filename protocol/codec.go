package protocol

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// codec frames Cap'n Proto messages on the connection's socket for
// go-capnp's transport.New. It exists because transport.NewStream cannot
// bound the size of a received message, and because it is the one place
// that sees every message: it records why the stream ended, and with
// DebugCalls it times calls from their Call to their Return.
//
// go-capnp calls Decode from one goroutine (its reader) and Encode from
// another (its sender), never concurrently with themselves; Close may come
// from anywhere, any number of times.
type codec struct {
	conn *Conn
	nc   net.Conn
	dec  *capnp.Decoder
	enc  *capnp.Encoder
	log  *callLog // nil unless DebugCalls

	closeOnce sync.Once
}

func newCodec(c *Conn, nc net.Conn, maxSize uint64, log *callLog) *codec {
	dec := capnp.NewDecoder(bufio.NewReader(nc))
	dec.MaxMessageSize = maxSize
	return &codec{conn: c, nc: nc, dec: dec, enc: capnp.NewEncoder(nc), log: log}
}

func (k *codec) Decode() (*capnp.Message, error) {
	msg, err := k.dec.Decode()
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
