package protocol

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// ServerOptions configures NewServer. The zero value, and nil, are usable.
type ServerOptions struct {
	// Logger receives panics at Error and, with DebugCalls, calls at
	// Debug. Nil means silent. A Conn's Logger is a good choice in a
	// bootstrap factory: its lines name the connection.
	Logger *slog.Logger

	// DebugCalls logs every call the server runs at Debug: interface.method,
	// duration and error. Options.DebugCalls logs the same calls as they
	// cross a connection; turn on one of the two.
	DebugCalls bool
}

// NewServer is this project's ServerToClient: it returns a capability
// served by the given methods (from a generated X_Methods function).
// Each method runs inside a wrapper that recovers a panic, logs it with
// its stack at Error and fails the call with an error, so that a bug in
// one method never kills the process; it then closes the connection that
// delivered the call, whose state is unknown after the panic (other
// connections carry on; a spawned child shuts down as when its parent
// goes away). With DebugCalls the wrapper also
// logs each call. impl is the server's brand and, if it implements
// server.Shutdowner, is shut down when the capability's last reference
// goes. Typed use:
//
//	schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, impl), impl, opts))
//
// As with any go-capnp server, the methods run one at a time unless a
// method calls call.Go(); methods that block or call out to another
// process must call it first.
//
// Prefer it to go-capnp's server.New (and a generated X_ServerToClient):
// besides the recovered panics, calls pipelined on a call made in this
// process wait for it to return and then fail cleanly when the
// capability they target in its results is null or lacks the method,
// and a call to a method the server does not implement gets a pipeline
// that fails the calls made on its results. With server.New each of these
// crashes the process, in go-capnp's AnswerQueue.
func NewServer(methods []server.Method, impl any, opts *ServerOptions) capnp.Client {
	var log *slog.Logger
	debugCalls := false
	if opts != nil {
		log, debugCalls = opts.Logger, opts.DebugCalls
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wrapped := make([]server.Method, len(methods))
	for i, m := range methods {
		wrapped[i] = server.Method{Method: m.Method, Impl: guard(m, log, debugCalls)}
	}
	shutdown, _ := impl.(server.Shutdowner)
	return capnp.NewClient(serverHook{server.New(wrapped, impl, shutdown)})
}

// serverHook is go-capnp's server with one change: a call to a method the
// server does not implement is answered, as before, with an unimplemented
// error, and its pipeline is one that fails every call made on it too,
// where go-capnp's returns nil. A nil pipeline crashes the process in
// go-capnp's AnswerQueue (answerqueue.go, Fulfill) when the call had been
// pipelined on a local call that had not returned yet.
type serverHook struct{ *server.Server }

// Send makes a call from this process. It goes through Recv, as a call
// from a connection does, so that calls pipelined on it wait for it to
// return outside go-capnp's AnswerQueue: its Fulfill crashes the process
// when one of them targets a null capability, or a server without that
// method, in the results (server.Server's own Send would queue them there).
func (h serverHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return rpcconn.SendHeld(ctx, h, s)
}

func (h serverHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	if pc := h.Server.Recv(ctx, r); pc != nil {
		return pc
	}
	return unimplementedPipeline{r.Method}
}

// unimplementedPipeline fails every call made on the results of a call to
// an unimplemented method.
type unimplementedPipeline struct{ m capnp.Method }

func (u unimplementedPipeline) err() error {
	return capnp.Unimplemented("unimplemented: results of " + u.m.String())
}

func (u unimplementedPipeline) PipelineRecv(_ context.Context, _ []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	r.Reject(u.err())
	return u
}

func (u unimplementedPipeline) PipelineSend(_ context.Context, _ []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, u.err()), func() {}
}

func guard(m server.Method, log *slog.Logger, debugCalls bool) func(context.Context, *server.Call) error {
	name := displayMethod(m.Method)
	impl := m.Impl
	return func(ctx context.Context, call *server.Call) (err error) {
		var start time.Time
		if debugCalls {
			start = time.Now()
		}
		defer func() {
			if v := recover(); v != nil {
				log.Error("panic in method", "method", name, "panic", v, "stack", string(debug.Stack()))
				// The peer learns that the method failed, not our internals.
				err = fmt.Errorf("%s: internal error (panic)", name)
				if c, ok := rpcconn.OwnerFromContext(ctx).(*Conn); ok {
					c.log.Error("closing the connection after a panic in a method it called", "method", name)
					c.closeAfterPanic(name)
				}
			}
			if debugCalls {
				args := []any{"method", name, "duration", time.Since(start)}
				if err != nil {
					args = append(args, "err", err)
				}
				log.Debug("call run", args...)
			}
		}()
		return impl(ctx, call)
	}
}
