package protocol

import (
	"log/slog"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// DefaultMaxMessageSize is the largest message a connection accepts when
// Options.MaxMessageSize is zero.
const DefaultMaxMessageSize = 64 << 20

// DefaultMessageTimeout is how long a peer may take to send one whole
// message, from its first byte, when Options.MessageTimeout is zero.
const DefaultMessageTimeout = 10 * time.Second

// DefaultWriteTimeout is how long a write to the peer may make no
// progress, when Options.WriteTimeout is zero.
const DefaultWriteTimeout = 10 * time.Second

// DefaultMaxConnections is how many connections Listen serves at once
// when Options.MaxConnections is zero.
const DefaultMaxConnections = 16

// Defaults of the per-connection limits below, when their Options field
// is zero.
const (
	DefaultMaxCallsInFlight = rpcconn.DefaultMaxCalls         // 1024
	DefaultMaxBytesInFlight = rpcconn.DefaultMaxBytesInFlight // 64 MiB
	DefaultMaxQueueBytes    = rpcconn.DefaultMaxQueueBytes    // 16 MiB
	DefaultMaxTableSize     = rpcconn.DefaultMaxTableSize     // 65536
	DefaultTraverseLimit    = rpcconn.DefaultTraverseLimit    // 64 MiB
	DefaultDepthLimit       = rpcconn.DefaultDepthLimit       // 64
)

// Options configures a connection. The zero value, and nil, are usable.
type Options struct {
	// Logger receives the connection's log lines, each with a "conn"
	// group naming the connection: opened and closed (with the reason)
	// at Info, bugs caught at Error, calls at Debug. The
	// caller's logger should already carry the process name and pid.
	// Nil means silent.
	Logger *slog.Logger

	// DebugCalls logs every call that crosses the connection, in either
	// direction, at Debug ("call made", "call served"): interface.method,
	// duration from the Call message to its Return, and error. The wire
	// carries only IDs: names come from the schemas registered with
	// go-capnp's schemas.DefaultRegistry (package schema does so when
	// imported) and from methods
	// served through NewServer or called through a proxy from Connect;
	// otherwise the IDs are logged. Off by default.
	DebugCalls bool

	// MessageTimeout bounds how long the peer may take to send one
	// message, counted from the moment its first byte arrives; a peer that
	// leaves a message incomplete for longer is dropped, with an error
	// wrapping ErrMessageTimeout. The clock runs only while a message is
	// partly received, and only while this side waits to read more of
	// it: a peer that sends nothing is never dropped for it, however long
	// it stays idle, nor is one whose message waits while this side is
	// busy (back-pressure). Zero means DefaultMessageTimeout (10 s);
	// a negative value turns the timeout off.
	MessageTimeout time.Duration

	// WriteTimeout bounds how long a write to the peer may go without the
	// peer taking a single byte of it. A peer that stops reading while
	// this side has something to send (results, calls, Finish...) is
	// dropped once its socket buffer is full and WriteTimeout has passed,
	// with an error wrapping ErrWriteTimeout; without it, the writer would
	// wait forever and the connection's queues would stay full. A peer
	// that reads slowly but steadily is not dropped, nor is one that is
	// idle. Zero means DefaultWriteTimeout (10 s); a negative value turns
	// the timeout off.
	WriteTimeout time.Duration

	// Limits bound what one peer may make this side hold: message size,
	// calls and bytes in flight, queues and tables, and how far a message
	// may be read. The zero value means every default.
	Limits

	// MaxConnections is how many connections Listen serves at once. When
	// that many are open, Listen stops accepting until one ends: further
	// clients wait in the listening socket's backlog (their connect
	// succeeds, their first call waits) and are not refused. Serve and
	// Connect ignore it. Zero means DefaultMaxConnections (16); a
	// negative value means no limit.
	MaxConnections int
}

// Limits bound the resources one connection may take. Each is a
// defence against a peer that misbehaves, by bug or by design; the
// defaults suit a daemon and its local clients. The zero value means every
// default.
type Limits struct {
	// MaxMessageSize is the largest message, in bytes, accepted from the
	// peer; a larger one ends the connection. Zero means
	// DefaultMaxMessageSize (64 MiB).
	MaxMessageSize uint64

	// MaxCallsInFlight bounds the calls in flight on the connection, in
	// each direction: this side's calls whose answers the caller has not
	// released (further calls wait, or fail with their context), and the
	// peer's calls not yet returned (one more ends the connection). Zero
	// means DefaultMaxCallsInFlight (1024).
	MaxCallsInFlight int

	// MaxBytesInFlight bounds the bytes of call messages in flight, in
	// each direction, as MaxCallsInFlight bounds their number. Zero means
	// DefaultMaxBytesInFlight (64 MiB).
	MaxBytesInFlight uint64

	// MaxQueueBytes bounds the memory held by messages waiting to be
	// written to the peer: results of this side's methods wait while the
	// queue holds more, and the connection stops reading from the peer
	// while its own replies hold twice as much. Zero means
	// DefaultMaxQueueBytes (16 MiB).
	MaxQueueBytes uint64

	// MaxTableSize bounds the answers the peer may leave unfinished and
	// the capabilities it may export to this side; one more ends the
	// connection. Zero means DefaultMaxTableSize (65536).
	MaxTableSize int

	// TraverseLimit and DepthLimit bound the reading of every message
	// received: the bytes a reader may visit and the pointer depth. A
	// method reading its params past them gets an error, and so fails
	// that call; an RPC message itself past them ends the connection.
	// Zero means DefaultTraverseLimit (64 MiB) and DefaultDepthLimit (64).
	TraverseLimit uint64
	DepthLimit    uint
}

func (o *Options) logger() *slog.Logger {
	if o == nil || o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o *Options) maxMessageSize() uint64 {
	if o == nil || o.MaxMessageSize == 0 {
		return DefaultMaxMessageSize
	}
	return o.MaxMessageSize
}

func (o *Options) debugCalls() bool {
	return o != nil && o.DebugCalls
}

func (o *Options) messageTimeout() time.Duration {
	switch {
	case o == nil || o.MessageTimeout == 0:
		return DefaultMessageTimeout
	case o.MessageTimeout < 0:
		return 0
	}
	return o.MessageTimeout
}

func (o *Options) writeTimeout() time.Duration {
	switch {
	case o == nil || o.WriteTimeout == 0:
		return DefaultWriteTimeout
	case o.WriteTimeout < 0:
		return 0
	}
	return o.WriteTimeout
}

// maxConnections returns the limit on Listen's connections, 0 for none.
func (o *Options) maxConnections() int {
	switch {
	case o == nil || o.MaxConnections == 0:
		return DefaultMaxConnections
	case o.MaxConnections < 0:
		return 0
	}
	return o.MaxConnections
}

// rpcOptions returns the rpcconn options that o sets; the caller adds the
// rest.
func (o *Options) rpcOptions() *rpcconn.Options {
	ro := &rpcconn.Options{MaxMessageSize: o.maxMessageSize()}
	if o != nil {
		ro.MaxCalls = o.MaxCallsInFlight
		ro.MaxBytesInFlight = o.MaxBytesInFlight
		ro.MaxQueueBytes = o.MaxQueueBytes
		ro.MaxTableSize = o.MaxTableSize
		ro.TraverseLimit = o.TraverseLimit
		ro.DepthLimit = o.DepthLimit
	}
	return ro
}
