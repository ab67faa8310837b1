package mp

import (
	"fmt"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// ErrDisconnected is matched (errors.Is) by the error of every call that
// failed because the connection to its peer ended, whichever side ended
// it: calls queued, in flight, pipelined or made after the end. It is the
// one such error of this module (protocol.ErrDisconnected is the same
// value). A `disconnected` exception that the peer returns, relaying a
// loss further away, is a *RemoteError of type Disconnected and does not
// match it.
var ErrDisconnected = rpcconn.ErrDisconnected

// ErrUnimplemented is matched by the error of a call to a method that its
// target does not implement, in this process or another (an exception of
// type unimplemented). Generated Unimplemented* types return errors that
// wrap it.
var ErrUnimplemented = rpcconn.ErrUnimplemented

// ExceptionType is the type of a Cap'n Proto exception: what the caller
// might do about the error.
type ExceptionType = exc.Type

// The exception types.
const (
	Failed        ExceptionType = exc.Failed
	Overloaded    ExceptionType = exc.Overloaded
	Disconnected  ExceptionType = exc.Disconnected
	Unimplemented ExceptionType = exc.Unimplemented
)

// A RemoteError is an error returned by a method in another process. Its
// Error is the text of the error there. errors.Is matches the declared
// error it carries the code of (see NewError), and ErrUnimplemented for
// an exception of type unimplemented.
type RemoteError = rpcconn.RemoteError

// An Error is a declared error: one with a stable code that identifies it
// across processes. Declare each once, next to the interface whose
// methods return it, and return it (or an error wrapping it) from
// methods; the caller's errors.Is matches it whether the method ran in
// its process or another. Codes are for programs, not people: say
// "wallet.notFound", not a sentence; they must be unique in a program.
type Error struct {
	code string
	text string
	typ  ExceptionType
}

// NewError declares an error of type Failed with the given code and
// text. It panics if code is empty, longer than 256 bytes, or declared
// already: declarations are package-level variables, and a clash is a
// programming error.
func NewError(code, text string) *Error { return NewErrorOfType(Failed, code, text) }

// NewErrorOfType is NewError with an exception type other than Failed:
// Overloaded for "try again later", Unimplemented for "not here".
func NewErrorOfType(t ExceptionType, code, text string) *Error {
	e := &Error{code: code, text: text, typ: t}
	if err := rpcconn.RegisterCode(code, e); err != nil {
		panic(fmt.Sprintf("mp: NewError: %v", err))
	}
	return e
}

func (e *Error) Error() string { return e.text }

// Code returns the error's code.
func (e *Error) Code() string { return e.code }

// CapnpErrorCode returns the code sent with the error.
func (e *Error) CapnpErrorCode() string { return e.code }

// CapnpExceptionType returns the type of the exception the error is sent
// as.
func (e *Error) CapnpExceptionType() ExceptionType { return e.typ }

// Is makes an unimplemented declared error match ErrUnimplemented.
func (e *Error) Is(target error) bool {
	return target == ErrUnimplemented && e.typ == Unimplemented
}

// NotImplemented returns the error of a method that is not implemented:
// it wraps ErrUnimplemented and names the method ("Chain.height").
func NotImplemented(method string) error {
	return fmt.Errorf("%s: %w", method, ErrUnimplemented)
}

// An Interceptor runs around every call that generated code makes or
// serves through a connection (set with protocol.Options.Interceptor or
// ipc.Options.Interceptor): it calls next to make or serve the call and
// returns its error, or one of its own. It may time the call, count it,
// log it, or refuse it without calling next. info says which method,
// which side, and which connection (info.Peer() is the protocol.Conn).
// Calls between values in one process are direct Go calls and pass no
// interceptor.
type Interceptor = rpcconn.Interceptor

// CallInfo describes a call to an Interceptor.
type CallInfo = rpcconn.CallInfo
