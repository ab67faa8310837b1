package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// BaseInit implements the Init methods that every executable serves the
// same way. An executable's Init embeds it and adds its own methods.
type BaseInit struct {
	Ctx  *Context
	Conn *protocol.Conn
}

// Serve turns an Init implementation into a capability, with panics
// recovered and calls logged under -debug=ipc.
func (c *Context) Serve(impl schema.Init_Server) schema.Init {
	return schema.Init(protocol.NewServer(schema.Init_Methods(nil, impl), impl, c.serverOptions()))
}

func (c *Context) serverOptions() *protocol.ServerOptions {
	// Calls are logged by the connection (protocol.Options.DebugCalls);
	// the server only logs recovered panics.
	return &protocol.ServerOptions{Logger: c.Logger}
}

// Hello answers a peer's introduction with this executable's PeerInfo, or
// an error naming both sides when they speak different protocol versions.
func (b *BaseInit) Hello(_ context.Context, call schema.Init_hello) error {
	r, err := call.Args().Caller()
	if err != nil {
		return fmt.Errorf("read caller: %w", err)
	}
	caller, err := readPeerInfo(r)
	if err != nil {
		return err
	}
	local := b.Ctx.LocalInfo()
	if err := checkVersions(local, caller); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewCallee()
	if err != nil {
		return err
	}
	return local.write(w)
}

// MakeEcho returns a new Echo served by this process.
func (b *BaseInit) MakeEcho(_ context.Context, call schema.Init_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e := echo{log: b.Ctx.Logger}
	return res.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, b.Ctx.serverOptions())))
}

// echo returns its argument unchanged.
type echo struct {
	log *slog.Logger // never nil
}

func (echo) Echo(_ context.Context, call schema.Echo_echo) error {
	// Bytes, not a string: the argument is copied once, straight into
	// the results (the arguments stay valid until Echo returns).
	b, err := call.Args().EchoBytes()
	if err != nil {
		return fmt.Errorf("read argument: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := capnp.NewUInt8List(res.Segment(), int32(len(b)+1))
	if err != nil {
		return err
	}
	// In pieces below 1 MiB: Go copies 1 MiB or more at once with
	// non-temporal stores, which leave the results out of the cache just
	// before the connection's write(2) reads them (measured: a third more
	// CPU in that write for a 1 MiB echo).
	dst := l.ToPtr().Data()
	for len(b) > 0 {
		n := copy(dst, b[:min(len(b), 512<<10)])
		dst, b = dst[n:], b[n:]
	}
	return capnp.Struct(res).SetPtr(0, l.ToPtr())
}

// MaxEchoDelay is the longest delay Echo.echoAfter accepts.
const MaxEchoDelay = time.Minute

// EchoAfter returns its argument after the requested delay. It calls
// call.Go() first so that the connection's other calls go on meanwhile,
// and gives up when the caller cancels or the connection ends.
func (e echo) EchoAfter(ctx context.Context, call schema.Echo_echoAfter) error {
	call.Go()
	delay := time.Duration(call.Args().DelayMs()) * time.Millisecond
	if delay > MaxEchoDelay {
		return fmt.Errorf("delay %s is over the limit of %s", delay, MaxEchoDelay)
	}
	s, err := call.Args().Echo()
	if err != nil {
		return fmt.Errorf("read argument: %w", err)
	}
	e.log.Debug("delaying an echo", "delay", delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		e.log.Debug("delayed echo canceled", "delay", delay, "err", context.Cause(ctx))
		return fmt.Errorf("echo canceled before its delay of %s: %w", delay, context.Cause(ctx))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(s)
}

// SubscribeLifetime streams this process's lifetime events to the caller's
// listener until the returned subscription is released or the listener's
// connection goes.
func (b *BaseInit) SubscribeLifetime(_ context.Context, call schema.Init_subscribeLifetime) error {
	listener := call.Args().Listener()
	if !listener.IsValid() {
		return errors.New("no listener given")
	}
	unsubscribe := b.Ctx.Lifetime.Subscribe(listener.AddRef())
	res, err := call.AllocResults()
	if err != nil {
		unsubscribe()
		return err
	}
	sub := &subscription{unsubscribe: unsubscribe}
	return res.SetSubscription(schema.LifetimeSubscription(protocol.NewServer(schema.LifetimeSubscription_Methods(nil, sub), sub, b.Ctx.serverOptions())))
}

// Stop asks this process to shut down; see Context.RequestStop.
func (b *BaseInit) Stop(context.Context, schema.Init_stop) error {
	b.Ctx.Logger.Info("stop requested over IPC")
	b.Ctx.RequestStop()
	return nil
}

// subscription ends a lifetime subscription when its last reference goes.
type subscription struct {
	once        sync.Once
	unsubscribe func()
}

func (s *subscription) Shutdown() { s.once.Do(s.unsubscribe) }

// ErrNotServed is the error with which an executable answers the Init
// methods it does not serve (a wallet asked for makeNode, a node asked
// for makeWalletLoader). Across a connection the error arrives as a
// message only; IsNotServed recognises it on the caller's side.
var ErrNotServed = errors.New("ipc: not served by this process")

// IsNotServed reports whether err, returned by a call on an Init in this
// or another process, means that the method is not served there.
func IsNotServed(err error) bool {
	return err != nil && (errors.Is(err, ErrNotServed) || strings.Contains(err.Error(), ErrNotServed.Error()))
}

func (b *BaseInit) notServed(method string) error {
	return fmt.Errorf("%s: %w (%s)", method, ErrNotServed, b.Ctx.ExeName)
}

// MakeNode fails with ErrNotServed; the node's Init overrides it.
func (b *BaseInit) MakeNode(context.Context, schema.Init_makeNode) error {
	return b.notServed("makeNode")
}

// MakeChain fails with ErrNotServed; the node's Init overrides it.
func (b *BaseInit) MakeChain(context.Context, schema.Init_makeChain) error {
	return b.notServed("makeChain")
}

// MakeWalletLoader fails with ErrNotServed; the wallet's Init overrides
// it.
func (b *BaseInit) MakeWalletLoader(context.Context, schema.Init_makeWalletLoader) error {
	return b.notServed("makeWalletLoader")
}
