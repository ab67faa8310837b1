package rpcconn

import (
	"context"
	"log/slog"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Defaults for Options' zero fields.
const (
	DefaultMaxMessageSize   = 64 << 20
	MaxSegments             = 512 // as the C++ reference
	DefaultTraverseLimit    = 64 << 20
	DefaultDepthLimit       = 64
	DefaultMaxCalls         = 1024
	DefaultMaxBytesInFlight = 64 << 20
	DefaultMaxTableSize     = 1 << 16
	DefaultMaxQueueBytes    = 16 << 20
)

// Options configures a connection. The zero value and nil are usable.
type Options struct {
	// Owner is what OwnerFromContext returns for the context of every
	// call this connection delivers to a local capability: a handle of
	// the code that owns the connection, e.g. to close it from inside a
	// method. The connection does nothing else with it.
	Owner any

	// BootstrapClient is offered to the peer's Bootstrap requests. The
	// connection takes ownership: it releases it when it ends. The zero
	// Client makes Bootstrap requests fail.
	BootstrapClient capnp.Client

	// Logger receives the reason the connection ended (Debug: package
	// protocol logs the end itself, with its reason) and stacks of
	// recovered bugs (Error). Nil means silent.
	Logger *slog.Logger

	// MaxMessageSize is the largest message accepted, in bytes, framing
	// included. Default DefaultMaxMessageSize. A message may have at most
	// MaxSegments segments.
	MaxMessageSize uint64

	// TraverseLimit and DepthLimit are set on every received message:
	// bytes that reading it may traverse, and pointer depth. Defaults
	// DefaultTraverseLimit and DefaultDepthLimit.
	TraverseLimit uint64
	DepthLimit    uint

	// MaxCalls bounds the calls in flight in each direction: questions
	// this side has sent whose answers the caller has not released
	// (callers wait), and calls from the peer not yet returned (more
	// aborts the connection). Default DefaultMaxCalls.
	MaxCalls int

	// MaxBytesInFlight bounds the bytes of call messages in flight in
	// each direction, as MaxCalls does their number. A single message
	// larger than the limit is allowed when nothing else is in flight.
	// Default DefaultMaxBytesInFlight.
	MaxBytesInFlight uint64

	// MaxTableSize bounds the imports the peer may create and the
	// answers it may leave unfinished. Default DefaultMaxTableSize.
	MaxTableSize int

	// Interceptor, if set, runs around every call that package mp's
	// generated code makes or serves through this connection.
	Interceptor Interceptor

	// Observe, if set, sees every message: received ones (sent=false)
	// before they are handled, one at a time in order, on the goroutine
	// reading the connection (one of its own, or a caller waiting for
	// its Return: see the package doc), and sent ones
	// (sent=true) just before they are written, one at a time, on the
	// goroutine writing them (the writer, or the one that queued them).
	// It must return quickly and must not keep m, which is valid only
	// during the call. For logging calls (protocol's DebugCalls).
	Observe func(sent bool, m rpccp.Message)

	// MaxQueueBytes bounds the outgoing queue: results returned by server
	// methods wait while it holds more. Messages the protocol itself
	// sends never wait. Default DefaultMaxQueueBytes.
	MaxQueueBytes uint64

	// readPatience, for tests, replaces defaultReadPatience (role.go).
	readPatience time.Duration
}

type limits struct {
	maxMessage, traverse, maxBytes, maxQueue uint64
	depth                                    uint
	maxCalls, maxTable                       int
}

func (o *Options) limits() limits {
	var z Options
	if o == nil {
		o = &z
	}
	l := limits{o.MaxMessageSize, o.TraverseLimit, o.MaxBytesInFlight, o.MaxQueueBytes, o.DepthLimit, o.MaxCalls, o.MaxTableSize}
	def := func(v *uint64, d uint64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.maxMessage, DefaultMaxMessageSize)
	def(&l.traverse, DefaultTraverseLimit)
	def(&l.maxBytes, DefaultMaxBytesInFlight)
	def(&l.maxQueue, DefaultMaxQueueBytes)
	if l.depth == 0 {
		l.depth = DefaultDepthLimit
	}
	if l.maxCalls <= 0 {
		l.maxCalls = DefaultMaxCalls
	}
	if l.maxTable <= 0 {
		l.maxTable = DefaultMaxTableSize
	}
	return l
}

// CallInfo describes a call to an interceptor.
type CallInfo struct {
	// Method is the method called.
	Method capnp.Method
	// Server says that the call is being served in this process (it came
	// from the peer); otherwise this process makes it.
	Server bool
	// Conn is the connection the call goes through.
	Conn *Conn
}

// Peer returns the Options.Owner of the call's connection (package
// protocol's *Conn for its connections), or nil.
func (i *CallInfo) Peer() any {
	if i.Conn == nil {
		return nil
	}
	return i.Conn.owner
}

// An Interceptor runs around every call made or served through a
// connection by package mp's generated code: it calls next to make or
// serve the call, and returns its error (or one of its own). It may time
// the call, count it, log it, or refuse it without calling next.
type Interceptor func(ctx context.Context, info *CallInfo, next func(context.Context) error) error

// Interceptor returns the connection's interceptor (Options.Interceptor).
func (c *Conn) Interceptor() Interceptor { return c.icept }
