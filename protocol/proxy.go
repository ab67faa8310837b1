package protocol

import (
	"context"
	"errors"
	"sync"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// proxyHook is the capnp.ClientHook behind the client that Connect returns:
// it forwards every call to the peer's bootstrap capability and runs the
// functions given to AddCleanup once, when the client's last reference is
// released or when the connection ends, whichever comes first.
//
// go-capnp calls Shutdown while holding the client's locks, so the
// functions run in a goroutine of the Conn, never in Shutdown itself.
type proxyHook struct {
	conn  *Conn
	inner capnp.Client // the bootstrap capability; released by Shutdown

	// once runs the hooks. A second caller of fire waits until they have
	// run: the Conn's end calls fire as a cleanup, and Done must not
	// close while hooks that a late Shutdown started are still running.
	once sync.Once

	mu    sync.Mutex
	fired bool // once has started
	hooks []func()
}

func (p *proxyHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return p.inner.SendCall(ctx, s)
}

func (p *proxyHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	return p.inner.RecvCall(ctx, r)
}

func (p *proxyHook) Brand() capnp.Brand { return capnp.Brand{Value: p} }

// ForwardsTo returns the capability p forwards to, for package mp, which
// calls it directly (p's lifetime stays the proxy's).
func (p *proxyHook) ForwardsTo() capnp.Client { return p.inner }

// RPCConn returns p's RPC connection, for package mp: the interceptor of
// the calls it forwards is the connection's.
func (p *proxyHook) RPCConn() *rpcconn.Conn { return p.conn.rpc() }

func (p *proxyHook) Shutdown() {
	p.inner.Release()
	p.mu.Lock()
	fired := p.fired
	p.mu.Unlock()
	// Once the connection has ended, spawn runs nothing: the end calls
	// p.fire itself (Connect registered it as a cleanup).
	if !fired {
		p.conn.spawn(p.fire)
	}
}

func (p *proxyHook) String() string { return "protocol.proxyHook{" + p.inner.String() + "}" }

// fire runs the hooks, the first time only, in registration order; later
// calls return once they have run.
func (p *proxyHook) fire() {
	p.once.Do(func() {
		p.mu.Lock()
		p.fired = true
		hooks := p.hooks
		p.hooks = nil
		p.mu.Unlock()
		for _, fn := range hooks {
			fn()
		}
	})
}

func (p *proxyHook) add(fn func()) {
	p.mu.Lock()
	if !p.fired {
		p.hooks = append(p.hooks, fn)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	// Fired while the proxy is still referenced: its connection has
	// ended, and Done may have closed already. As with Conn.AddCleanup,
	// fn runs now, in the caller's goroutine, not in one that nobody
	// waits for.
	fn()
}

// AddCleanup registers fn on a proxy that Connect returned, or on a copy
// or AddRef of it: fn runs exactly once, when the proxy's last reference
// is released or when its connection ends, whichever comes first. It runs
// in a goroutine that the proxy's Conn owns (Conn.Done waits for it), not
// in the goroutine that releases the proxy; if the connection has ended
// already, it runs at once, in the caller's goroutine, before AddCleanup
// returns. AddCleanup returns
// an error for a client that is not such a proxy, or that was released.
func AddCleanup(proxy capnp.Client, fn func()) error {
	snap := proxy.Snapshot()
	defer snap.Release()
	p, ok := snap.Brand().Value.(*proxyHook)
	if !ok {
		return errors.New("protocol: AddCleanup: not a live proxy from Connect")
	}
	p.add(fn)
	return nil
}

// ConnOf returns the connection of a live proxy that Connect returned (or
// of a copy or AddRef of it), and false for any other client.
func ConnOf(proxy capnp.Client) (*Conn, bool) {
	snap := proxy.Snapshot()
	defer snap.Release()
	p, ok := snap.Brand().Value.(*proxyHook)
	if !ok {
		return nil, false
	}
	return p.conn, true
}
