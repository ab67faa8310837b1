package interop

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/interop/internal/ischema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// A goServer is the Go side's Peer, served to a C++ client, on one of
// the two paths: go-capnp's generated API (goPeer) or the plain Go
// interface that mpgen generates, served through package mp (mpPeer).
// Its state is what the tests inspect.
type goServer interface {
	// client returns a new bootstrap capability served by it.
	client() capnp.Client
	// wait waits for the goroutines of its echoCapLater calls.
	wait()
	// liveCounted returns how many of the Counted objects it made are
	// still referred to.
	liveCounted() int32
	// heard returns what the listener makeListener hands out received.
	heard() (received, outOfOrder uint64)
	// hooks returns the functions its echoes tell about echoAfter calls.
	hooks() *echoHooks
}

// goServers are the paths a goServer is made on, by name.
var goServers = []struct {
	path string
	new  func() goServer
}{
	{"capnpc-go", func() goServer { return newGoPeer() }},
	{"mp", func() goServer { return newMPPeer() }},
}

// echoHooks, if set, are told when an echoAfter call starts and when it
// returns. Set them before the server is called.
type echoHooks struct {
	started func(ms uint32)
	ended   func(err error)
}

// goPeer is the Go side's Peer on go-capnp's generated API, the mirror
// of PeerImpl in cpp/peer.c++. One goPeer may serve several connections'
// bootstrap objects.
type goPeer struct {
	echoHooks
	live     atomic.Int32 // Counted objects not yet shut down
	listener *goListener  // the one makeListener hands out
	later    sync.WaitGroup
}

func newGoPeer() *goPeer { return &goPeer{listener: &goListener{}} }

// client returns a new bootstrap capability served by p.
func (p *goPeer) client() capnp.Client {
	return protocol.NewServer(ischema.Peer_Methods(nil, p), p, nil)
}

func (p *goPeer) wait()                                { p.later.Wait() }
func (p *goPeer) liveCounted() int32                   { return p.live.Load() }
func (p *goPeer) heard() (received, outOfOrder uint64) { return p.listener.counts() }
func (p *goPeer) hooks() *echoHooks                    { return &p.echoHooks }

func (p *goPeer) MakeEcho(ctx context.Context, call ischema.Peer_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e := &goEcho{echoHooks: p.echoHooks}
	return res.SetEcho(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, nil)))
}

func (p *goPeer) MakeCallback(ctx context.Context, call ischema.Peer_makeCallback) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetCallback(newGoCallback())
}

func (p *goPeer) Fail(ctx context.Context, call ischema.Peer_fail) error {
	reason, err := call.Args().Reason()
	if err != nil {
		return err
	}
	return exc.New(exc.Type(call.Args().Type()), "", reason)
}

func (p *goPeer) MakeCounted(ctx context.Context, call ischema.Peer_makeCounted) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	c := &goCounted{live: &p.live}
	p.live.Add(1)
	return res.SetCounted(ischema.Counted(protocol.NewServer(ischema.Counted_Methods(nil, c), c, nil)))
}

func (p *goPeer) LiveCount(ctx context.Context, call ischema.Peer_liveCount) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(uint32(p.live.Load()))
	return nil
}

func (p *goPeer) EchoCap(ctx context.Context, call ischema.Peer_echoCap) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetCap(call.Args().Cap().AddRef())
}

func (p *goPeer) EchoCapLater(ctx context.Context, call ischema.Peer_echoCapLater) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	target := call.Args().Cap().AddRef()
	delay := time.Duration(call.Args().DelayMs()) * time.Millisecond
	promise, resolver := capnp.NewLocalPromise[ischema.CallOrder]()
	p.later.Add(1)
	go func() {
		defer p.later.Done()
		time.Sleep(delay)
		resolver.Fulfill(target)
	}()
	return res.SetCap(promise)
}

func (p *goPeer) MakeListener(ctx context.Context, call ischema.Peer_makeListener) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetListener(p.listener.client())
}

func (p *goPeer) Received(ctx context.Context, call ischema.Peer_received) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	n, bad := p.listener.counts()
	res.SetCount(n)
	res.SetOutOfOrder(bad)
	return nil
}

func (p *goPeer) StreamTo(ctx context.Context, call ischema.Peer_streamTo) error {
	call.Go() // streams to the caller: others may call in meanwhile
	return streamEvents(ctx, call.Args().Listener(), call.Args().Count())
}

// streamEvents streams events with sequence numbers 1..count to l and
// waits until each has returned.
func streamEvents(ctx context.Context, l schema.LifetimeListener, count uint32) error {
	for i := uint32(1); i <= count; i++ {
		err := l.Event(ctx, func(p schema.LifetimeListener_event_Params) error {
			ev, err := p.NewEvent()
			if err != nil {
				return err
			}
			ev.SetKind(schema.LifetimeEvent_Kind_startup)
			ev.SetSequence(uint64(i))
			return ev.SetExecutable("go")
		})
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	return l.WaitStreaming()
}

type goEcho struct{ echoHooks }

func (e *goEcho) Echo(ctx context.Context, call schema.Echo_echo) error {
	s, err := call.Args().Echo()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(s)
}

func (e *goEcho) EchoAfter(ctx context.Context, call schema.Echo_echoAfter) (err error) {
	call.Go()
	if e.ended != nil {
		defer func() { e.ended(err) }()
	}
	ms := call.Args().DelayMs()
	if ms > 60000 {
		return fmt.Errorf("echoAfter: delay %d ms is over a minute", ms)
	}
	if e.started != nil {
		e.started(ms)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	s, err := call.Args().Echo()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(s)
}

// goCallback calls back with a new goCallback where C++'s CallbackImpl
// passes thisCap(): go-capnp offers no reference to a server's own
// capability (a WeakRef taken from NewServer's client dies once that client
// has been sent away), and a strong one would keep it alive forever. The
// sides alternate all the same.
type goCallback struct{}

func newGoCallback() ischema.Callback {
	cb := &goCallback{}
	return ischema.Callback(protocol.NewServer(ischema.Callback_Methods(nil, cb), cb, nil))
}

func (cb *goCallback) Call(ctx context.Context, call ischema.Callback_call) error {
	call.Go() // calls back into its caller
	depth := call.Args().Depth()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if depth == 0 {
		return res.SetTrace("go")
	}
	f, release := call.Args().Back().Call(ctx, func(p ischema.Callback_call_Params) error {
		p.SetDepth(depth - 1)
		return p.SetBack(newGoCallback())
	})
	defer release()
	r, err := f.Struct()
	if err != nil {
		return err
	}
	trace, err := r.Trace()
	if err != nil {
		return err
	}
	return res.SetTrace("go " + trace)
}

type goCounted struct{ live *atomic.Int32 }

func (c *goCounted) Ping(context.Context, ischema.Counted_ping) error { return nil }

// Shutdown runs when the last reference to the capability goes.
func (c *goCounted) Shutdown() { c.live.Add(-1) }

// eventCounter counts lifetime events in the order they arrive: those
// whose sequence number is not their position are out of order.
type eventCounter struct {
	mu         sync.Mutex
	received   uint64
	outOfOrder uint64
}

func (c *eventCounter) add(sequence uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received++
	if sequence != c.received {
		c.outOfOrder++
	}
}

func (c *eventCounter) counts() (received, outOfOrder uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.outOfOrder
}

// goListener counts the events it is sent.
type goListener struct{ eventCounter }

func (l *goListener) client() schema.LifetimeListener {
	return schema.LifetimeListener(protocol.NewServer(schema.LifetimeListener_Methods(nil, l), l, nil))
}

func (l *goListener) Event(ctx context.Context, call schema.LifetimeListener_event) error {
	ev, err := call.Args().Event()
	if err != nil {
		return err
	}
	l.add(ev.Sequence())
	return nil
}

// goCallOrder numbers the calls it receives.
type goCallOrder struct{ n atomic.Uint32 }

func (o *goCallOrder) GetCallSequence(ctx context.Context, call ischema.CallOrder_getCallSequence) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetN(o.n.Add(1) - 1)
	return nil
}

// runHelperClient connects to the peer on descriptor 3, starts a call
// that takes a minute and blocks until it is killed: the Go client that a
// test kills mid-call.
func runHelperClient() int {
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
	peer := ischema.Peer(boot)
	defer peer.Release()
	ef, releaseEcho := peer.MakeEcho(ctx, nil)
	defer releaseEcho()
	f, release := ef.Echo().EchoAfter(ctx, func(p schema.Echo_echoAfter_Params) error {
		p.SetDelayMs(60000)
		return p.SetEcho("never")
	})
	defer release()
	fmt.Println("calling echoAfter")
	_, err = f.Struct()
	fmt.Fprintln(os.Stderr, "helper: echoAfter returned:", err)
	return 1
}

// runHelper serves p on descriptor 3 until the connection ends. It is
// the Go server that a test kills mid-call: it prints "echoAfter started"
// when such a call arrives.
func runHelper(p goServer) int {
	f := os.NewFile(3, "ipc")
	nc, err := netFileConn(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	p.hooks().started = func(ms uint32) { fmt.Printf("echoAfter started %d\n", ms) }
	err = protocol.Serve(context.Background(), nc, func(*protocol.Conn) capnp.Client { return p.client() }, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: serve:", err)
		return 1
	}
	return 0
}
