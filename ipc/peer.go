package ipc

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// PeerInfo is what an executable tells its peers about itself through
// Init.hello.
type PeerInfo struct {
	ProtocolVersion uint32
	Build           string // module version and VCS revision
	Executable      string
	PID             int
}

func (p PeerInfo) String() string {
	return fmt.Sprintf("%s (pid %d, protocol %d, build %s)", p.Executable, p.PID, p.ProtocolVersion, p.Build)
}

func (p PeerInfo) write(w schema.PeerInfo) error {
	w.SetProtocolVersion(p.ProtocolVersion)
	w.SetPid(int32(p.PID))
	if err := w.SetBuild(p.Build); err != nil {
		return err
	}
	return w.SetExecutable(p.Executable)
}

func readPeerInfo(r schema.PeerInfo) (PeerInfo, error) {
	build, err := r.Build()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("read build: %w", err)
	}
	exe, err := r.Executable()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("read executable: %w", err)
	}
	return PeerInfo{
		ProtocolVersion: r.ProtocolVersion(),
		Build:           build,
		Executable:      exe,
		PID:             int(r.Pid()),
	}, nil
}

// checkVersions returns an error naming both sides when they speak
// different protocol versions.
func checkVersions(local, remote PeerInfo) error {
	if local.ProtocolVersion == remote.ProtocolVersion {
		return nil
	}
	return fmt.Errorf("%w: %s and %s", ErrVersionMismatch, local, remote)
}

// buildString describes this executable's build from its embedded build
// information: the main module's version and VCS revision.
var buildString = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	s := bi.Main.Version
	if s == "" {
		s = "(devel)"
	}
	var rev, dirty string
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if kv.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		s += " " + rev + dirty
	}
	return s
})

// LocalInfo is what this executable tells its peers about itself.
func (c *Context) LocalInfo() PeerInfo {
	return PeerInfo{
		ProtocolVersion: schema.ProtocolVersion,
		Build:           buildString(),
		Executable:      c.ExeName,
		PID:             pid,
	}
}

// hello introduces this executable to the peer behind init and checks that
// the two belong together.
func (i *Ipc) hello(ctx context.Context, init schema.Init) (PeerInfo, error) {
	local := i.ctx.LocalInfo()
	fut, release := init.Hello(ctx, func(p schema.Init_hello_Params) error {
		w, err := p.NewCaller()
		if err != nil {
			return err
		}
		return local.write(w)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: %w", err)
	}
	r, err := res.Callee()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: read reply: %w", err)
	}
	remote, err := readPeerInfo(r)
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: %w", err)
	}
	if err := checkVersions(local, remote); err != nil {
		return remote, err
	}
	return remote, nil
}

// peer is one outgoing connection: to a spawned child (proc set) or to a
// listening process. Its run goroutine, owned by the Ipc, ends the
// connection, and stops and reaps the child, when the proxy is released,
// the connection is lost or the child dies, whichever comes first; then it
// runs the cleanups registered with Ipc.AddCleanup.
type peer struct {
	ipc      *Ipc
	proc     *process.Child // nil for a connection to a listener
	conn     *protocol.Conn
	log      *slog.Logger
	stopOnce sync.Once
	stopReq  chan struct{}
	done     chan struct{}
	abort    atomic.Bool // kill the child at once: it failed to start

	mu sync.Mutex
	// For a spawned child: this side's own reference to its Init, used
	// to ask it to stop once the caller has released the proxy, and the
	// subscription to its lifetime events. run takes them over when the
	// peer starts ending (ending set).
	control      schema.Init
	subscription schema.LifetimeSubscription
	ending       bool
	cleanups     []func()
	finished     bool
}

// setControl hands the control references to run, or releases them if
// the peer is already ending.
func (p *peer) setControl(control schema.Init, subscription schema.LifetimeSubscription) {
	p.mu.Lock()
	if !p.ending {
		p.control, p.subscription = control, subscription
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	subscription.Release()
	control.Release()
}

func (i *Ipc) newPeer(proc *process.Child, conn *protocol.Conn, log *slog.Logger) (*peer, error) {
	p := &peer{
		ipc:     i,
		proc:    proc,
		conn:    conn,
		log:     log,
		stopReq: make(chan struct{}),
		done:    make(chan struct{}),
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, errClosed
	}
	i.peers[p] = struct{}{}
	i.tasks.Add(1)
	go func() {
		defer i.tasks.Done()
		p.run()
	}()
	return p, nil
}

func (p *peer) requestStop() { p.stopOnce.Do(func() { close(p.stopReq) }) }

// stop requests the stop and waits until it is complete.
func (p *peer) stop() {
	p.requestStop()
	<-p.done
}

// addCleanup registers fn to run once the peer has ended, at once if it
// has.
func (p *peer) addCleanup(fn func()) {
	p.mu.Lock()
	if !p.finished {
		p.cleanups = append(p.cleanups, fn)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	fn()
}

func (p *peer) run() {
	defer close(p.done)
	var procDone <-chan struct{}
	if p.proc != nil {
		procDone = p.proc.Done()
	}
	asked := false
	select {
	case <-p.stopReq:
		asked = true
	case <-p.conn.Done():
	case <-procDone:
	}
	deadline := time.Now().Add(p.ipc.opts.ShutdownTimeout)
	p.mu.Lock()
	p.ending = true
	control, subscription := p.control, p.subscription
	p.control, p.subscription = schema.Init{}, schema.LifetimeSubscription{}
	p.mu.Unlock()
	if asked && p.proc != nil && control.IsValid() {
		p.askToStop(control, deadline)
	}
	subscription.Release()
	control.Release()
	_ = p.conn.Close()
	if p.proc != nil {
		grace := time.Until(deadline)
		if p.abort.Load() {
			grace = 0
		}
		status := p.proc.Stop(grace)
		if status.Success() {
			p.log.Info("child process exited", "status", status.String())
		} else {
			p.log.Warn("child process exited", "status", status.String())
		}
	} else {
		p.log.Info("connection ended", "reason", p.conn.Err())
	}
	p.ipc.mu.Lock()
	delete(p.ipc.peers, p)
	p.ipc.mu.Unlock()
	p.mu.Lock()
	p.finished = true
	cleanups := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for _, fn := range cleanups {
		fn()
	}
}

// askToStop asks a spawned child to shut down and waits until it has
// closed its end of the connection (its shutdown events arrive
// meanwhile), or until deadline.
func (p *peer) askToStop(control schema.Init, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	fut, release := control.Stop(ctx, nil)
	_, err := fut.Struct()
	release()
	if err != nil && !protocol.IsDisconnected(err) {
		p.log.Warn("asking the child to stop failed", "err", err)
	}
	select {
	case <-p.conn.Done():
	case <-ctx.Done():
		p.log.Warn("child did not shut down in time; killing it", "timeout", p.ipc.opts.ShutdownTimeout)
	}
}

// adopt turns the bootstrap capability of a new outgoing connection into
// the Init proxy handed to the caller: it checks that the peer belongs with
// this executable and ties the peer's lifetime to the proxy. For a spawned
// child it also keeps a reference of its own to the child's Init and
// subscribes to the child's lifetime events, which it logs.
func (i *Ipc) adopt(ctx context.Context, p *peer, boot capnp.Client) (schema.Init, error) {
	init := schema.Init(boot)
	fail := func(err error) (schema.Init, error) {
		// Stop first: the child may never answer, and releasing a
		// bootstrap capability that never resolved must not wait on it
		// (go-capnp's did); ending the connection settles it.
		p.abort.Store(true)
		p.stop()
		init.Release()
		return schema.Init{}, err
	}
	if err := protocol.AddCleanup(boot, p.requestStop); err != nil {
		return fail(err)
	}
	hctx, cancel := context.WithTimeout(ctx, i.opts.StartTimeout)
	defer cancel()
	// For a spawned child, ask for the control reference and the lifetime
	// subscription before waiting for hello's reply: the three go out
	// together and their replies come back in one round trip.
	var control schema.Init
	var subscribed schema.Init_subscribeLifetime_Results_Future
	if p.proc != nil {
		control = schema.Init(p.conn.Bootstrap(ctx))
		listener := schema.LifetimeListener(protocol.NewServer(
			schema.LifetimeListener_Methods(nil, eventLogger{p.log}), eventLogger{p.log}, i.ctx.serverOptions()))
		var release capnp.ReleaseFunc
		subscribed, release = control.SubscribeLifetime(hctx, func(ps schema.Init_subscribeLifetime_Params) error {
			return ps.SetListener(listener)
		})
		defer release()
	}
	info, err := i.hello(hctx, init)
	if err != nil {
		control.Release()
		return fail(err)
	}
	p.log.Info("connected", "peer", info.String())
	if p.proc != nil {
		res, err := subscribed.Struct()
		if err != nil {
			control.Release()
			return fail(fmt.Errorf("subscribe to lifetime events: %w", err))
		}
		p.setControl(control, res.Subscription().AddRef())
	}
	return init, nil
}

// eventLogger logs the lifetime events a child streams to its parent.
type eventLogger struct{ log *slog.Logger }

func (e eventLogger) Event(_ context.Context, call schema.LifetimeListener_event) error {
	r, err := call.Args().Event()
	if err != nil {
		return err
	}
	ev, err := ReadEvent(r)
	if err != nil {
		return err
	}
	e.log.Info("child lifetime event", "kind", ev.Kind.String(), "subsystem", ev.Subsystem.String(), "seq", ev.Sequence)
	return nil
}
