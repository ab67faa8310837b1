package protocol

import (
	"log/slog"
)

// DefaultMaxMessageSize is the largest message a connection accepts when
// Options.MaxMessageSize is zero.
const DefaultMaxMessageSize = 64 << 20

// maxSegments is the most segments a received message may have; the C++
// reference implementation stops at 512, go-capnp's decoder at 513.
const maxSegments = 512

// Options configures a connection. The zero value, and nil, are usable.
type Options struct {
	// Logger receives the connection's log lines, each with a "conn"
	// group naming the connection: opened and closed (with the reason)
	// at Info, go-capnp's own complaints at Error, calls at Debug. The
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

	// MaxMessageSize is the largest message, in bytes, accepted from the
	// peer; a larger one ends the connection. Zero means
	// DefaultMaxMessageSize (64 MiB).
	MaxMessageSize uint64
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
