package protocol

import (
	"errors"
	"io"
	"net"
	"syscall"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

var (
	// ErrDisconnected is wrapped by Conn.Err when the connection ended
	// because of the peer: it closed the socket, died, aborted, or sent
	// something this side refused. Every call that fails because its
	// connection ended returns an error wrapping it, whichever side ended
	// the connection and whatever the moment.
	ErrDisconnected = rpcconn.ErrDisconnected

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
	return rpcconn.IsDisconnected(err) ||
		capnp.IsDisconnected(err) ||
		exc.IsType(err, exc.Disconnected) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
