package protocol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// A Conn is one RPC connection on a socket. It is safe to use from
// several goroutines.
//
// A Conn owns its socket and one goroutine, which waits for the RPC
// connection to end, runs the cleanups and then closes Done. The RPC
// connection ends only after every call it is serving has returned:
// their contexts are canceled when the connection ends, and methods must
// then return promptly, or Done never closes.
type Conn struct {
	log     *slog.Logger
	quiet   bool // Options.QuietConnections
	done    chan struct{}
	started time.Time

	mu       sync.Mutex
	rc       *rpcconn.Conn // nil until newInit has returned
	why      endReason     // the first cause of the end; stillOpen before
	cause    error         // the detail behind why
	ended    bool          // the RPC connection is over; set once, by run
	cleanups []func()
	wg       sync.WaitGroup // goroutines from spawn; Add only while !ended
}

// endReason says why a connection ended. Only the first cause counts:
// once we close the socket, the receive error that follows is ours.
type endReason int

const (
	stillOpen  endReason = iota
	weClosed             // Close
	ctxEnded             // the context given to Serve ended
	peerClosed           // end of stream, reset, or a normal Abort
	failed               // anything else: the peer sent what we refuse
)

func (r endReason) String() string {
	switch r {
	case weClosed:
		return "we closed"
	case ctxEnded:
		return "ctx ended"
	case peerClosed:
		return "peer closed"
	case failed:
		return "error"
	}
	return "open"
}

// connIDs numbers connections within the process, for log lines only.
var connIDs atomic.Uint64

// Connect runs Cap'n Proto RPC on nc and returns the peer's bootstrap
// capability as a proxy. nc is owned by the Conn from then on, even on
// error. This side offers no bootstrap capability of its own.
//
// ctx bounds only the setting up, as with net.Dialer.DialContext: once
// Connect has returned, the connection lasts until Close or until the
// peer goes. Connect does not wait for a round trip: the proxy can be
// called at once, and a peer that does not speak Cap'n Proto shows up as
// an error from the first call.
//
// Releasing the last reference to the proxy releases the peer's bootstrap
// capability but does not close the connection; Close does. AddCleanup
// registers functions to run when the proxy goes.
func Connect(ctx context.Context, nc net.Conn, opts *Options) (*Conn, capnp.Client, error) {
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, capnp.Client{}, err
	}
	c := newConn(context.Background(), nc, opts, "connect", nil)
	// Bootstrap's context cancels the bootstrap question; a caller's
	// deadline must not do that once Connect has returned.
	p := &proxyHook{conn: c, inner: c.rpc().Bootstrap(context.WithoutCancel(ctx))}
	c.AddCleanup(p.fire)
	return c, capnp.NewClient(p), nil
}

// Bootstrap asks the peer for its bootstrap capability once more (a
// second Bootstrap is legal in the protocol) and returns it plainly, not
// wrapped as the proxy from Connect is: releasing it runs no cleanup. The
// facade uses it to keep a reference of its own, e.g. to ask a child to
// stop after the caller released its proxy.
func (c *Conn) Bootstrap(ctx context.Context) capnp.Client {
	rc := c.rpc()
	if rc == nil { // called from newInit
		return capnp.ErrorClient(errors.New("protocol: Bootstrap before the connection has started"))
	}
	return rc.Bootstrap(context.WithoutCancel(ctx))
}

// Serve runs Cap'n Proto RPC on nc, offering newInit(conn) as this side's
// bootstrap capability, until the connection ends. nc is owned by Serve.
// Each connection gets its own bootstrap object: go-capnp runs one call
// at a time per server object unless the method calls call.Go(), so a
// shared object would let one slow peer stall every other. The
// connection releases the object when it ends. newInit may return the
// zero Client; the peer's bootstrap requests then fail.
//
// Serve returns nil when the peer closes the connection or Close is
// called, ctx.Err() after closing the connection when ctx ends (the calls
// being served then have a second to return, so that a call that asked
// this process to stop gets its answer), and an
// error wrapping ErrDisconnected when the connection ends for another
// reason (such as a message over Options.MaxMessageSize). In every case it
// returns only after the connection has ended and its cleanups have run.
func Serve(ctx context.Context, nc net.Conn, newInit func(*Conn) capnp.Client, opts *Options) error {
	if err := ctx.Err(); err != nil {
		nc.Close()
		return err
	}
	c := newConn(ctx, nc, opts, "serve", newInit)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.why {
	case weClosed, peerClosed:
		return nil
	case ctxEnded:
		return c.cause
	}
	return c.errLocked()
}

func newConn(ctx context.Context, nc net.Conn, opts *Options, role string, newInit func(*Conn) capnp.Client) *Conn {
	c := &Conn{done: make(chan struct{}), started: time.Now()}
	attrs := []any{slog.Uint64("id", connIDs.Add(1))}
	if opts != nil && opts.RemoteName != "" {
		attrs = append(attrs, slog.String("remote", opts.RemoteName))
	} else if a := addrString(nc.RemoteAddr()); a != "" {
		attrs = append(attrs, slog.String("remote", a))
	}
	if a := addrString(nc.LocalAddr()); a != "" {
		attrs = append(attrs, slog.String("local", a))
	}
	c.log = opts.logger().With(slog.Group("conn", attrs...))
	ro := opts.rpcOptions()
	ro.Logger, ro.Owner = c.log, c
	ro.Interceptor = opts.interceptor()
	if opts.debugCalls() {
		ro.Interceptor = chain(ro.Interceptor, (&callLog{log: c.log}).intercept)
	}

	if newInit != nil {
		started := false
		defer func() {
			if !started { // newInit panicked
				nc.Close()
			}
		}()
		ro.BootstrapClient = newInit(c)
		started = true
	}
	c.quiet = opts != nil && opts.QuietConnections
	c.log.Log(context.Background(), c.eventLevel(), "connection opened", "role", role)
	// The RPC connection serves calls as soon as it exists, and a method
	// may close this Conn (Close, CloseWithError, a panic) before NewConn
	// has returned here. Holding c.mu until c.rc is set makes such a
	// Close wait for it and close rc before the method returns; seeing
	// c.rc nil, it would only record why and leave the closing to the
	// check below, after the method's results had gone out.
	c.mu.Lock()
	rc := rpcconn.NewConn(withTimeouts(nc, opts), ro)
	if testNewConnHook != nil {
		testNewConnHook(role)
	}
	c.rc = rc
	closed := c.why != stillOpen // newInit closed it
	c.mu.Unlock()
	if closed {
		rc.Close()
	}
	go c.run(ctx)
	return c
}

// testNewConnHook, set by tests only, runs in newConn (with the role,
// "serve" or "connect") once the RPC connection has started, before c.rc
// is set.
var testNewConnHook func(role string)

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	s := a.String()
	if s == "<nil>" || s == "@" { // "@": an unnamed unix socket
		return ""
	}
	return s
}

// returnGrace is how long a connection whose context ended waits for the
// calls it is serving to return before it closes.
const returnGrace = time.Second

// run is the Conn's goroutine: it ends the connection when ctx ends, and
// once the RPC connection is over, records why, runs the cleanups, waits
// for the goroutines from spawn and closes done.
func (c *Conn) run(ctx context.Context) {
	rc := c.rpc()
	select {
	case <-rc.Done():
	case <-ctx.Done():
		c.setEnd(ctxEnded, ctx.Err())
		// The process is stopping, perhaps because a call on this
		// connection asked it to: the calls being served return first.
		rc.CloseAfterReturns(returnGrace)
		<-rc.Done()
	}

	c.mu.Lock()
	c.noteEndLocked()
	c.ended = true
	why, cause := c.why, c.cause
	cleanups := c.cleanups
	c.cleanups = nil
	c.mu.Unlock()

	args := []any{"reason", why.String(), "duration", time.Since(c.started).Round(time.Millisecond)}
	if cause != nil && why != ctxEnded {
		args = append(args, "err", cause)
	}
	level := c.eventLevel()
	if why == failed {
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, "connection closed", args...)

	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	c.wg.Wait()
	close(c.done)
}

// eventLevel is the level of the connection's opening and ordinary end.
func (c *Conn) eventLevel() slog.Level {
	if c.quiet {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// setEnd records why the connection ends, unless a cause was recorded
// already.
func (c *Conn) setEnd(why endReason, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.why == stillOpen {
		c.why, c.cause = why, cause
	}
}

// noteEndLocked records why the RPC connection ended on its own, if it
// has and no cause was recorded before: the peer closed the stream,
// reset it, or aborted in a way that means a normal close (type
// disconnected, or go-capnp's "connection closed"), or anything else (the peer aborted for another reason, broke
// the protocol, left a message incomplete...).
func (c *Conn) noteEndLocked() {
	if c.why != stillOpen || c.rc == nil {
		return
	}
	err := c.rc.Err()
	if err == nil {
		return
	}
	c.why, c.cause = failed, err
	var pe *rpcconn.ProtocolError
	if errors.As(err, &pe) {
		if pe.NormalClose() {
			c.why = peerClosed
		}
	} else if IsDisconnected(err) {
		c.why = peerClosed
	}
}

// Close ends the connection: it closes the socket, so that the peer sees
// the end at once and pending calls on both sides fail. It does not wait
// for the calls this side is serving to return (their contexts are
// canceled), so it may be called from one of them; Done says when the
// connection is over. Close is idempotent and returns nil.
func (c *Conn) Close() error {
	c.setEnd(weClosed, nil)
	if rc := c.rpc(); rc != nil { // else newInit is running: newConn closes it
		rc.Close()
	}
	return nil
}

// CloseWithError ends the connection as Close does, for a reason of this
// side's (a peer that failed a check): pending and later calls on it fail
// with an error that wraps both ErrDisconnected and err, the peer is
// told why, and the connection's end is logged with err.
func (c *Conn) CloseWithError(err error) {
	c.setEnd(failed, err)
	if rc := c.rpc(); rc != nil {
		rc.CloseWithError(err)
	}
}

// closeAfterPanic ends the connection on which a method panicked: what
// the method left behind is unknown, so nothing more is served on it (a
// spawned child then shuts down, as when its parent goes away).
func (c *Conn) closeAfterPanic(method string) {
	c.setEnd(failed, fmt.Errorf("panic in %s: the connection's state is unknown", method))
	if rc := c.rpc(); rc != nil {
		rc.Close()
	}
}

// rpc returns the RPC connection, nil while newInit runs.
func (c *Conn) rpc() *rpcconn.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rc
}

// Done returns a channel that is closed when the connection has ended,
// every call it served has returned and the cleanups have run. The
// Shutdown methods of server objects that the connection released run
// in go-capnp's server goroutines, possibly a little after Done.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open. Once it is ending (from
// the moment Close returns, at the latest when Done is closed) it returns
// ErrClosed if this side ended it (Close, or Serve's context), or an
// error wrapping ErrDisconnected and the cause if the peer went away,
// aborted, or sent something this side refused.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *Conn) errLocked() error {
	c.noteEndLocked()
	switch c.why {
	case stillOpen:
		return nil
	case weClosed, ctxEnded:
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, c.cause)
}

// AddCleanup registers fn to run once, after the connection has ended and
// before Done is closed, in the Conn's goroutine; cleanups run in the
// reverse order of registration. If the connection has ended already, fn
// runs at once, in the caller's goroutine, before AddCleanup returns.
func (c *Conn) AddCleanup(fn func()) {
	c.mu.Lock()
	if !c.ended {
		c.cleanups = append(c.cleanups, fn)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	fn()
}

// spawn runs fn in a goroutine that Done waits for and reports true, or,
// if the connection has ended already, runs nothing and reports false:
// the caller then decides where fn runs, so that no goroutine is left
// without an owner.
func (c *Conn) spawn(fn func()) bool {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// Logger returns the connection's logger: the one from Options, with a
// "conn" group naming this connection.
func (c *Conn) Logger() *slog.Logger { return c.log }

// withTimeouts wraps nc with the write and message timeouts of opts. The
// wrappers pass the socket's descriptor on (syscall.Conn), which the RPC
// connection uses to write small messages without waking its writer.
func withTimeouts(nc net.Conn, opts *Options) net.Conn {
	if t := opts.writeTimeout(); t > 0 {
		nc = newWriteTimeoutConn(nc, t)
	}
	if t := opts.messageTimeout(); t > 0 {
		nc = newTimeoutConn(nc, t)
	}
	return nc
}
