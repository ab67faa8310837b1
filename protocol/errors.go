package protocol

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/rpc"
)

var (
	// ErrDisconnected is wrapped by Conn.Err when the connection ended
	// because of the peer: it closed the socket, died, aborted, or sent
	// something this side refused.
	ErrDisconnected = errors.New("protocol: peer disconnected")

	// ErrClosed is Conn.Err when this side ended the connection, by
	// Close or because the context given to Serve ended.
	ErrClosed = errors.New("protocol: connection closed")
)

// IsDisconnected reports whether err means the peer went away. Calls on a
// connection whose peer is gone fail with such an error; so do calls on
// a capability whose own connection, further along, is gone (Cap'n
// Proto's "disconnected" exception type travels across connections).
func IsDisconnected(err error) bool {
	if err == nil {
		return false
	}
	// capnp.IsDisconnected looks only at err itself; exc.IsType walks the
	// chain, so wrapped exceptions count too.
	return errors.Is(err, ErrDisconnected) ||
		capnp.IsDisconnected(err) ||
		exc.IsType(err, exc.Disconnected) ||
		errors.Is(err, rpc.ErrConnClosed) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// quietError marks a receive error as the normal end of a connection.
// go-capnp's rpc.Conn treats a receive error that wraps context.Canceled
// as a clean stop: it neither logs it at Error nor sends an Abort to the
// peer (rpc/rpc.go:286-292 in v3.1.0-alpha.2). We log the end ourselves,
// once, with its reason.
type quietError struct{ err error }

func (e quietError) Error() string   { return e.err.Error() }
func (e quietError) Unwrap() []error { return []error{e.err, context.Canceled} }
