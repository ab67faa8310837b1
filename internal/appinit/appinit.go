// Package appinit is what the reference program's executables (the node
// and the wallet) serve alike on their Init: makeEcho, the deprecated
// methods that the framework's control channel replaced (hello,
// subscribeLifetime and stop, which delegate to it), and ErrNotServed for
// the methods of the other executable. Each executable embeds Base in its
// own Init.
package appinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// Base implements the Init methods every executable serves the same way,
// and fails the others with schema.ErrNotServed.
type Base struct {
	Ctx *ipc.Context
}

var _ schema.Init = Base{}

// MakeEcho returns a new Echo served by this process.
func (b Base) MakeEcho(context.Context) (schema.Echo, error) {
	return Echo{Log: b.Ctx.Logger}, nil
}

// Hello answers the deprecated Init.hello as the control channel's hello
// does, in the old PeerInfo: a caller whose protocol version differs gets
// an error naming both (ipc.ErrVersionMismatch).
func (b Base) Hello(_ context.Context, caller *schema.PeerInfo) (*schema.PeerInfo, error) {
	if caller == nil {
		return nil, errors.New("hello without a PeerInfo")
	}
	local, err := b.Ctx.Hello(&control.PeerInfo{
		Application:        schema.Application,
		ApplicationVersion: caller.ProtocolVersion,
		Build:              caller.Build,
		Executable:         caller.Executable,
		Pid:                caller.Pid,
	})
	if err != nil {
		return nil, err
	}
	return &schema.PeerInfo{ProtocolVersion: local.ApplicationVersion, Build: local.Build, Executable: local.Executable, Pid: local.Pid}, nil
}

// SubscribeLifetime answers the deprecated Init.subscribeLifetime as the
// control channel does.
func (b Base) SubscribeLifetime(_ context.Context, listener control.LifetimeListener) (control.LifetimeSubscription, error) {
	return b.Ctx.SubscribeLifetime(listener)
}

// Stop answers the deprecated Init.stop as the control channel does.
func (b Base) Stop(context.Context) error {
	b.Ctx.Stop()
	return nil
}

func (b Base) notServed(method string) error {
	return fmt.Errorf("%s: %w (by the %s)", method, schema.ErrNotServed, b.Ctx.ExeName)
}

// MakeNode fails with ErrNotServed; the node's Init overrides it.
func (b Base) MakeNode(context.Context) (schema.Node, error) {
	return nil, b.notServed("makeNode")
}

// MakeChain fails with ErrNotServed; the node's Init overrides it.
func (b Base) MakeChain(context.Context) (schema.Chain, error) {
	return nil, b.notServed("makeChain")
}

// MakeWalletLoader fails with ErrNotServed; the wallet's Init overrides
// it.
func (b Base) MakeWalletLoader(context.Context, *schema.WalletSettings, schema.Chain) (schema.WalletLoader, error) {
	return nil, b.notServed("makeWalletLoader")
}

// CallEcho asks init for an Echo and has it echo msg. Through a proxy
// the call is pipelined on makeEcho: one round trip for both.
func CallEcho(ctx context.Context, init schema.Init, msg string) (string, error) {
	var e schema.Echo
	if p, ok := init.(*schema.InitClient); ok {
		e = p.MakeEchoPipelined(ctx)
	} else {
		var err error
		if e, err = init.MakeEcho(ctx); err != nil {
			return "", err
		}
	}
	defer mp.Release(e)
	return e.Echo(ctx, msg)
}

// LegacySubsystems maps the reference program's subsystem names to the
// values of the old Subsystem enum, which its lifetime events still carry
// for peers that predate LifetimeEvent.subsystemName.
var LegacySubsystems = map[string]control.Subsystem{
	"database":               control.Subsystem_Database,
	"walletProcess":          control.Subsystem_WalletProcess,
	"blockProducer":          control.Subsystem_BlockProducer,
	"walletDatabase":         control.Subsystem_WalletDatabase,
	"chainNotifications":     control.Subsystem_ChainNotifications,
	ipc.SubsystemIPCParent:   control.Subsystem_IpcParent,
	ipc.SubsystemIPCListener: control.Subsystem_IpcListener,
}

// MaxEchoDelay is the longest delay Echo.echoAfter accepts.
const MaxEchoDelay = time.Minute

// Echo returns its argument unchanged.
type Echo struct {
	Log *slog.Logger // never nil
}

// Echo returns s.
func (Echo) Echo(_ context.Context, s string) (string, error) { return s, nil }

// EchoAfter returns s after delayMs milliseconds, and gives up when the
// caller cancels or the connection ends. It takes calls concurrently, so
// that a slow one holds up no other.
func (e Echo) EchoAfter(ctx context.Context, s string, delayMs uint32) (string, error) {
	delay := time.Duration(delayMs) * time.Millisecond
	if delay > MaxEchoDelay {
		return "", fmt.Errorf("delay %s is over the limit of %s", delay, MaxEchoDelay)
	}
	e.Log.Debug("delaying an echo", "delay", delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return s, nil
	case <-ctx.Done():
		e.Log.Debug("delayed echo canceled", "delay", delay, "err", context.Cause(ctx))
		return "", fmt.Errorf("echo canceled before its delay of %s: %w", delay, context.Cause(ctx))
	}
}

// TakesConcurrentCalls makes Echo's calls run concurrently (see package
// mp's ordering rule): echoAfter's delays must not add up.
func (Echo) TakesConcurrentCalls() bool { return true }
