package rpcconn

import (
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// ErrDisconnected is wrapped by every error from a call that failed because
// the connection ended, whoever ended it, and by exceptions of Cap'n
// Proto's "disconnected" type received from the peer.
var ErrDisconnected = errors.New("protocol: disconnected")

// IsDisconnected reports whether err says that a connection went away.
// It is true exactly when errors.Is(err, ErrDisconnected) is.
func IsDisconnected(err error) bool { return errors.Is(err, ErrDisconnected) }

// A ProtocolError is the reason a connection was aborted because the peer
// broke the protocol (or, for Remote, because the peer aborted).
type ProtocolError struct {
	Remote bool   // the peer sent an Abort
	Reason string // what was wrong
	// Type is the type of the peer's Abort: Disconnected is how some
	// implementations close a connection normally.
	Type exc.Type
}

// NormalClose reports whether the peer ended the connection with an
// Abort that means an ordinary close: of type disconnected (the C++
// reference and others close that way), or go-capnp's "connection
// closed".
func (e *ProtocolError) NormalClose() bool {
	return e.Remote && (e.Type == exc.Disconnected || e.Reason == goCapnpCloseReason)
}

func (e *ProtocolError) Error() string {
	if e.Remote {
		return "rpcconn: peer aborted: " + e.Reason
	}
	return "rpcconn: protocol error: " + e.Reason
}

func protoErr(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// disconnected wraps cause in an exception of type Disconnected that
// errors.Is matches with ErrDisconnected.
func disconnected(cause error) error {
	return &exc.Exception{Type: exc.Disconnected, Prefix: "", Cause: &discError{cause}}
}

type discError struct{ cause error }

func (e *discError) Error() string {
	return ErrDisconnected.Error() + ": " + e.cause.Error()
}
func (e *discError) Unwrap() []error { return []error{ErrDisconnected, e.cause} }

// fromException turns a received exception into an error: a go-capnp
// *exc.Exception of the exception's type (which go-capnp's own code
// keeps when it annotates the error), wrapping a *RemoteError that
// carries the type and, if the peer sent one, the code of a declared
// error (see RegisterCode).
func fromException(e rpccp.Exception) error {
	reason, _ := e.Reason()
	t := exc.Type(e.Type())
	switch t {
	case exc.Failed, exc.Overloaded, exc.Unimplemented, exc.Disconnected:
	default:
		t = exc.Failed
	}
	re := &RemoteError{Type: t, Reason: reason}
	if e.HasDetails() {
		if ds, err := e.Details(); err == nil {
			for i := 0; i < ds.Len(); i++ {
				d := ds.At(i)
				if d.DetailId() != ErrorCodeDetailID {
					continue
				}
				if b, err := d.Data(); err == nil && len(b) <= maxCodeLen {
					re.Code = string(b)
				}
			}
		}
	}
	return &exc.Exception{Type: t, Cause: re}
}

// toException fills e from err: its type, its text, and the code of the
// declared error it wraps, if any, as a detail.
func toException(e rpccp.Exception, err error) error {
	e.SetType(rpccp.Exception_Type(TypeOf(err)))
	if code := CodeOf(err); code != "" {
		if ds, derr := e.NewDetails(1); derr == nil {
			ds.At(0).SetDetailId(ErrorCodeDetailID)
			ds.At(0).SetData([]byte(code))
		}
	}
	return e.SetReason(err.Error())
}
