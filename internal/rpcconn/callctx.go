package rpcconn

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// callCtx is the context of a call delivered to a local capability: it
// ends when the peer's Finish cancels the call, when the call returns, or
// when the connection ends. It lives inside the answer, so a call costs
// no allocation for its context, and it implements AfterFunc, so that
// contexts derived from it by server methods start no goroutine to watch
// it (the context package uses AfterFunc when a parent has it).
type callCtx struct {
	owner any   // Options.Owner of the delivering connection; set once
	conn  *Conn // the delivering connection; set once
	mu    sync.Mutex
	done  chan struct{} // made on demand
	err   error
	after map[*afterFunc]struct{}

	// inline is the connection goroutine delivering the call while it
	// holds the reading role (role.go), during Recv; touched only by
	// that goroutine. by is the same once the call runs inline
	// (TakeInline), guarded by the role's mutex.
	inline *reader
	by     *reader
}

// TakeInline reports whether the call whose context ctx is (the context
// a capability's Recv gets) may run to its end in Recv, on the goroutine
// that delivers it: one of the connection's, which reads the connection
// while no caller does. If so, the connection treats that goroutine as
// running application code from then on until Recv returns: should the
// call block or run long, another goroutine takes over reading within a
// bound (see package doc), and HandOff gives the reading away at once.
// The capability must have put the call in its place among the calls
// it serves in order before: the next message may be handled as soon as
// TakeInline returns. Calls that a caller delivers while reading for its
// own Return are never inline. The connection keeps nothing of an inline
// call's delivery: the PipelineCaller its Recv returns is dropped (the
// calls pipelined on it go through the answer), so that package mp may
// reuse the call's state once it is over.
func TakeInline(ctx context.Context) bool {
	x, ok := ctx.(*callCtx)
	if !ok || x.inline == nil {
		return false
	}
	return x.conn.enterBusy(x.inline, x)
}

// HandOff has another goroutine read the connection now if the call whose
// context ctx is runs inline (Inline) on the goroutine that reads it: the
// call is about to wait for something that reading the connection will
// not bring (an outgoing call on another connection).
func HandOff(ctx context.Context) {
	if x, ok := ctx.(*callCtx); ok && x.conn != nil {
		x.conn.handOff(x)
	}
}

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (x *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (x *callCtx) Value(key any) any {
	switch key {
	case ownerKey{}:
		return x.owner
	case connKey{}:
		return x.conn
	}
	return nil
}

// connKey is the context key under which a delivered call's context
// carries its connection.
type connKey struct{}

// ConnFromContext returns the connection that delivered the call whose
// context is ctx (or a context derived from it), and nil for any other
// context.
func ConnFromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Logger returns the connection's logger (a discarding one if none was
// given).
func (c *Conn) Logger() *slog.Logger { return c.log }

// ownerKey is the context key under which a delivered call's context
// carries Options.Owner.
type ownerKey struct{}

// OwnerFromContext returns the Options.Owner of the connection that
// delivered the call whose context is ctx (or a context derived from
// it), and nil for any other context.
func OwnerFromContext(ctx context.Context) any { return ctx.Value(ownerKey{}) }

func (x *callCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		if x.err != nil {
			return closedChan
		}
		x.done = make(chan struct{})
	}
	return x.done
}

func (x *callCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// AfterFunc arranges for f to run in its own goroutine once the context
// ends, as context.AfterFunc does; stop unregisters it.
func (x *callCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if x.after == nil {
		x.after = make(map[*afterFunc]struct{})
	}
	x.after[a] = struct{}{}
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		if _, ok := x.after[a]; !ok {
			return false
		}
		delete(x.after, a)
		return true
	}
}

// cancel ends the context; later calls do nothing.
func (x *callCtx) cancel() {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = context.Canceled
	if x.done != nil {
		close(x.done)
	}
	after := x.after
	x.after = nil
	x.mu.Unlock()
	for a := range after {
		go a.f()
	}
}

var _ context.Context = (*callCtx)(nil)
