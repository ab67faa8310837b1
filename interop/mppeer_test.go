package interop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/interop/internal/mpischema"
	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// mpPeer is the Go side's Peer on the generated path: a plain Go value
// implementing mpischema.Peer, served through package mp. It mirrors
// goPeer, with what mp changes: capabilities are Go values (a method
// returns its own Callback, as C++'s thisCap()), a parameter kept past
// the call is retained, and failures are declared errors, whose codes
// travel in Exception.details.
type mpPeer struct {
	echoHooks
	live     atomic.Int32 // Counted objects not yet released
	listener *mpListener  // the one makeListener hands out
	later    sync.WaitGroup
}

func newMPPeer() *mpPeer { return &mpPeer{listener: &mpListener{}} }

func (p *mpPeer) client() capnp.Client                 { return mpischema.PeerInterface.Capnp(p) }
func (p *mpPeer) wait()                                { p.later.Wait() }
func (p *mpPeer) liveCounted() int32                   { return p.live.Load() }
func (p *mpPeer) heard() (received, outOfOrder uint64) { return p.listener.counts() }
func (p *mpPeer) hooks() *echoHooks                    { return &p.echoHooks }

// declaredErrors are what mpPeer.Fail returns, wrapped with the reason:
// one declared error per exception type, each with a code that the C++
// reference (0.9.2, which knows no Exception.details) must ignore.
var declaredErrors = map[mpischema.ErrorType]*mp.Error{
	mpischema.ErrorType_Failed:        mp.NewErrorOfType(mp.Failed, "interop.failed", "interop: declared failed"),
	mpischema.ErrorType_Overloaded:    mp.NewErrorOfType(mp.Overloaded, "interop.overloaded", "interop: declared overloaded"),
	mpischema.ErrorType_Disconnected:  mp.NewErrorOfType(mp.Disconnected, "interop.disconnected", "interop: declared disconnected"),
	mpischema.ErrorType_Unimplemented: mp.NewErrorOfType(mp.Unimplemented, "interop.unimplemented", "interop: declared unimplemented"),
}

func (p *mpPeer) MakeEcho(context.Context) (schema.Echo, error) {
	return &mpEcho{echoHooks: p.echoHooks}, nil
}

func (p *mpPeer) MakeCallback(context.Context) (mpischema.Callback, error) {
	return &mpCallback{}, nil
}

func (p *mpPeer) Fail(_ context.Context, t mpischema.ErrorType, reason string) error {
	declared, ok := declaredErrors[t]
	if !ok {
		return fmt.Errorf("fail: no error type %v", t)
	}
	return fmt.Errorf("%s: %w", reason, declared)
}

func (p *mpPeer) MakeCounted(context.Context) (mpischema.Counted, error) {
	p.live.Add(1)
	return &mpCounted{live: &p.live}, nil
}

func (p *mpPeer) LiveCount(context.Context) (uint32, error) {
	return uint32(p.live.Load()), nil
}

func (p *mpPeer) EchoCap(_ context.Context, c mpischema.CallOrder) (mpischema.CallOrder, error) {
	// c is borrowed for the call; the results take a reference of their own.
	return mp.Retain(c), nil
}

// EchoCapLater returns a promise that it resolves to c after delay. mp
// has no promises of its own: go-capnp's local promise stands in, as a
// proxy of the generated type.
func (p *mpPeer) EchoCapLater(_ context.Context, c mpischema.CallOrder, delayMs uint32) (mpischema.CallOrder, error) {
	target := mpischema.CallOrderInterface.Capnp(c)
	promise, resolver := capnp.NewLocalPromise[capnp.Client]()
	p.later.Add(1)
	go func() {
		defer p.later.Done()
		time.Sleep(time.Duration(delayMs) * time.Millisecond)
		resolver.Fulfill(target)
	}()
	return mpischema.CallOrderInterface.FromCapnp(promise), nil
}

func (p *mpPeer) MakeListener(context.Context) (control.LifetimeListener, error) {
	return p.listener, nil
}

func (p *mpPeer) Received(context.Context) (mpischema.Peer_Received_Results, error) {
	n, bad := p.listener.counts()
	return mpischema.Peer_Received_Results{Count: n, OutOfOrder: bad}, nil
}

func (p *mpPeer) StreamTo(ctx context.Context, l control.LifetimeListener, count uint32) error {
	return mpStreamEvents(ctx, l, count)
}

// mpStreamEvents streams events with sequence numbers 1..count to l and
// waits until each has returned.
func mpStreamEvents(ctx context.Context, l control.LifetimeListener, count uint32) error {
	for i := uint32(1); i <= count; i++ {
		ev := &control.LifetimeEvent{Kind: control.LifetimeEvent_Kind_Startup, Executable: "go", Sequence: uint64(i)}
		if err := l.Event(ctx, ev); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	return mp.Flush(ctx, l)
}

// mpEcho takes its calls concurrently, as goEcho does with call.Go: a
// long echoAfter holds up no other call.
type mpEcho struct {
	mp.ConcurrentCalls
	echoHooks
}

func (e *mpEcho) Echo(_ context.Context, s string) (string, error) { return s, nil }

func (e *mpEcho) EchoAfter(ctx context.Context, s string, ms uint32) (_ string, err error) {
	if e.ended != nil {
		defer func() { e.ended(err) }()
	}
	if ms > 60000 {
		return "", fmt.Errorf("echoAfter: delay %d ms is over a minute", ms)
	}
	if e.started != nil {
		e.started(ms)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// mpCallback calls back with itself, as C++'s CallbackImpl does with
// thisCap(): a Go value is its own capability.
type mpCallback struct{}

func (c *mpCallback) Call(ctx context.Context, depth uint32, back mpischema.Callback) (string, error) {
	if depth == 0 {
		return "go", nil
	}
	trace, err := back.Call(ctx, depth-1, c)
	if err != nil {
		return "", err
	}
	return "go " + trace, nil
}

// mpFailingCallback fails every call with err.
type mpFailingCallback struct{ err error }

func (c *mpFailingCallback) Call(context.Context, uint32, mpischema.Callback) (string, error) {
	return "", c.err
}

// mpCounted counts itself out of live once no capability refers to it.
type mpCounted struct {
	live     *atomic.Int32
	released atomic.Bool
}

func (c *mpCounted) Ping(context.Context) error { return nil }

func (c *mpCounted) CapabilityReleased() {
	if c.released.CompareAndSwap(false, true) {
		c.live.Add(-1)
	}
}

// mpListener counts the events it is sent.
type mpListener struct{ eventCounter }

func (l *mpListener) Event(_ context.Context, ev *control.LifetimeEvent) error {
	if ev == nil {
		return errors.New("event: no event")
	}
	l.add(ev.Sequence)
	return nil
}

// mpCallOrder numbers the calls it receives.
type mpCallOrder struct{ n atomic.Uint32 }

func (o *mpCallOrder) GetCallSequence(context.Context, uint32) (uint32, error) {
	return o.n.Add(1) - 1, nil
}

// runMPHelperClient is runHelperClient on the generated path: it
// connects to the peer on descriptor 3, calls echoAfter for a minute and
// blocks until it is killed.
func runMPHelperClient() int {
	nc, err := netFileConn(os.NewFile(3, "ipc"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	ctx := context.Background()
	conn, boot, err := protocol.Connect(ctx, nc, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: connect:", err)
		return 1
	}
	defer conn.Close()
	peer := mpischema.PeerInterface.FromCapnp(boot)
	defer mp.Release(peer)
	e, err := peer.MakeEcho(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: makeEcho:", err)
		return 1
	}
	defer mp.Release(e)
	fmt.Println("calling echoAfter")
	_, err = e.EchoAfter(ctx, "never", 60000)
	fmt.Fprintln(os.Stderr, "helper: echoAfter returned:", err)
	return 1
}
