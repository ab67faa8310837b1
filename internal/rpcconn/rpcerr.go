package rpcconn

import (
	"errors"
	"fmt"
	"sync"

	"capnproto.org/go/capnp/v3/exc"
)

// ErrorCodeDetailID is the ID of the Exception.Detail whose data is the
// code of a declared error: the code's UTF-8 bytes. Peers that do not
// know it ignore it, as rpc.capnp asks.
const ErrorCodeDetailID uint64 = 0x9c713f12b8dfefec

// maxCodeLen bounds a received code: longer ones are ignored.
const maxCodeLen = 256

// A RemoteError is an exception the peer returned for a call.
type RemoteError struct {
	// Type is the exception's type: how the caller might respond.
	Type exc.Type
	// Reason is the peer's description of what went wrong.
	Reason string
	// Code is the code of the declared error the peer returned, if any
	// (see RegisterCode); empty otherwise.
	Code string
}

func (e *RemoteError) Error() string { return e.Reason }

// Unwrap returns the declared error registered for e.Code in this
// process, if any, so that errors.Is matches it on both sides.
func (e *RemoteError) Unwrap() error { return declared(e.Code) }

// CapnpExceptionType reports e.Type, so that a server relaying e keeps
// its type.
func (e *RemoteError) CapnpExceptionType() exc.Type { return e.Type }

// CapnpErrorCode reports e.Code, so that a server relaying e keeps its
// code.
func (e *RemoteError) CapnpErrorCode() string { return e.Code }

// ErrUnimplemented is matched (errors.Is) by the errors of calls to
// methods or interfaces that their target does not implement, whether
// it is in this process or the peer's; errors that wrap it are sent as
// exceptions of type unimplemented.
var ErrUnimplemented = errors.New("method not implemented")

// Is makes errors.Is(e, ErrUnimplemented) true for an unimplemented
// exception.
func (e *RemoteError) Is(target error) bool {
	return target == ErrUnimplemented && e.Type == exc.Unimplemented
}

var codes struct {
	sync.RWMutex
	m map[string]error
}

// RegisterCode declares err under code: an error wrapping err that a
// server returns carries code to the caller (see CodeOf), and a
// *RemoteError carrying code unwraps to err. It fails if code is empty,
// too long or taken by another error.
func RegisterCode(code string, err error) error {
	if code == "" || len(code) > maxCodeLen {
		return fmt.Errorf("rpcconn: error code %q must be 1 to %d bytes", code, maxCodeLen)
	}
	codes.Lock()
	defer codes.Unlock()
	if codes.m == nil {
		codes.m = make(map[string]error)
	}
	if old, ok := codes.m[code]; ok && old != err {
		return fmt.Errorf("rpcconn: error code %q is declared twice (%q and %q)", code, old, err)
	}
	codes.m[code] = err
	return nil
}

func declared(code string) error {
	if code == "" {
		return nil
	}
	codes.RLock()
	defer codes.RUnlock()
	return codes.m[code]
}

// CodeOf returns the code of the first error in err's tree that has one
// (a method CapnpErrorCode() string returning a non-empty code), or "".
func CodeOf(err error) string {
	var code string
	walk(err, func(e error) bool {
		if c, ok := e.(interface{ CapnpErrorCode() string }); ok {
			code = c.CapnpErrorCode()
			return code != ""
		}
		return false
	})
	return code
}

// TypeOf returns the exception type err is sent as: that of the first
// error in its tree that says (a method CapnpExceptionType, or a
// go-capnp *exc.Exception); Unimplemented for an error wrapping
// ErrUnimplemented; Disconnected for one wrapping ErrDisconnected;
// Failed otherwise.
func TypeOf(err error) exc.Type {
	t, found := exc.Failed, false
	walk(err, func(e error) bool {
		switch v := e.(type) {
		case interface{ CapnpExceptionType() exc.Type }:
			t, found = v.CapnpExceptionType(), true
		case *exc.Exception:
			t, found = v.Type, true
		default:
			switch e {
			case ErrUnimplemented:
				t, found = exc.Unimplemented, true
			case ErrDisconnected:
				t, found = exc.Disconnected, true
			}
		}
		return found
	})
	return t
}

// walk visits err's tree depth first, as errors.Is does, until visit
// returns true.
func walk(err error, visit func(error) bool) bool {
	for depth := 0; err != nil && depth < 100; depth++ {
		if visit(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if walk(e, visit) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}
