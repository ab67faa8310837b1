package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// ChildExit says how and when a child process ended.
type ChildExit struct {
	// Name is the child's name (ChildSpec.Name) and PID its process ID.
	Name string
	PID  int
	// Status is how the process ended: its exit code, or the signal
	// that ended it.
	Status process.ExitStatus
	// Time is when this process learned that the child had ended.
	Time time.Time
	// Requested says that this process had asked the child to stop (its
	// Init was released, or the Ipc closed) or had ended it (it failed
	// its handshake): the exit was expected.
	Requested bool
}

// String reads "the wallet process exited (killed by signal 9) at
// 15:04:05".
func (e ChildExit) String() string {
	status := e.Status.String()
	if e.Status.Signal != 0 {
		// Without the signal's name that Status.String adds in
		// parentheses of its own.
		status = fmt.Sprintf("killed by signal %d", int(e.Status.Signal))
	}
	return fmt.Sprintf("the %s process exited (%s) at %s", e.Name, status, e.Time.Format(time.TimeOnly))
}

// peer is one outgoing connection: to a spawned child (proc set) or to a
// listening process. Its run goroutine, owned by the Ipc, ends the
// connection, and stops and reaps the child, when the proxy is released,
// the connection is lost or the child dies, whichever comes first; then it
// runs the cleanups registered with AddCleanup and OnExit.
type peer struct {
	c        *core
	name     string
	proc     *process.Child // nil for a connection to a listener
	conn     *protocol.Conn
	log      *slog.Logger
	ctrl     control.Control // this side's own reference to the peer's control facet
	stopOnce sync.Once
	stopReq  chan struct{}
	done     chan struct{}
	abort    atomic.Bool // kill the child at once: it failed to start

	// The handshake's outcome, set before hsDone closes: the peer's
	// PeerInfo, or why there is none (ErrNoControl for a peer without
	// a control channel).
	hsDone chan struct{}
	info   *control.PeerInfo
	hsErr  error

	mu       sync.Mutex
	sub      control.LifetimeSubscription // the subscription to a child's events
	cleanups []func()
	onExit   []func(ChildExit)
	exit     *ChildExit
	finished bool
}

// newPeer starts the peer of a new outgoing connection whose bootstrap
// proxy is boot: releasing boot's last reference stops the peer.
func (c *core) newPeer(name string, proc *process.Child, conn *protocol.Conn, boot capnp.Client, log *slog.Logger) (*peer, error) {
	p := &peer{
		c:       c,
		name:    name,
		proc:    proc,
		conn:    conn,
		log:     log,
		stopReq: make(chan struct{}),
		done:    make(chan struct{}),
		hsDone:  make(chan struct{}),
	}
	// The proxy's cleanup runs when its last reference is released or
	// when the connection ends, whichever comes first: only the release
	// is a request to stop (a child that died by itself was not asked).
	if err := protocol.AddCleanup(boot, func() {
		if conn.Err() == nil {
			p.requestStop()
		}
	}); err != nil {
		return nil, err
	}
	p.ctrl = control.ControlInterface.FromCapnp(conn.Bootstrap(context.Background()))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		mp.Release(p.ctrl)
		return nil, errClosed
	}
	c.peers[p] = struct{}{}
	c.tasks.Add(1)
	go func() {
		defer c.tasks.Done()
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

// fail ends the peer at once for err: calls on the connection fail with
// an error wrapping it, and a child is killed without a grace period.
func (p *peer) fail(err error) {
	p.log.Error("ending the connection", "err", err)
	p.abort.Store(true)
	p.conn.CloseWithError(err)
	p.requestStop()
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

// addOnExit registers fn to run with the child's exit once it has been
// reaped, at once if it has.
func (p *peer) addOnExit(fn func(ChildExit)) {
	p.mu.Lock()
	if !p.finished {
		p.onExit = append(p.onExit, fn)
		p.mu.Unlock()
		return
	}
	exit := p.exit
	p.mu.Unlock()
	if exit != nil {
		fn(*exit)
	}
}

func (p *peer) run() {
	defer close(p.done)
	hs := make(chan struct{})
	go func() {
		defer close(hs)
		p.handshake()
	}()
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
	if p.abort.Load() {
		// This process ended the peer (fail): whichever of the stop
		// request and the connection's end came first, it asked.
		asked = true
	}
	deadline := time.Now().Add(p.c.opts.ShutdownTimeout)
	if asked && p.proc != nil && !p.abort.Load() {
		p.askToStop(hs, deadline)
	}
	_ = p.conn.Close()
	<-hs
	p.mu.Lock()
	sub := p.sub
	p.sub = nil
	p.mu.Unlock()
	mp.Release(sub)
	mp.Release(p.ctrl)
	var exit *ChildExit
	if p.proc != nil {
		grace := time.Until(deadline)
		if p.abort.Load() {
			grace = 0
		}
		status := p.proc.Stop(grace)
		exit = &ChildExit{Name: p.name, PID: p.proc.Pid(), Status: status, Time: time.Now(), Requested: asked}
		switch {
		case asked && status.Success():
			p.log.Info("child process exited", "status", status.String())
		case asked:
			p.log.Warn("child process exited", "status", status.String())
		default:
			p.log.Error("child process exited unexpectedly", "status", status.String())
		}
	} else {
		p.log.Info("connection ended", "reason", p.conn.Err())
	}
	p.c.mu.Lock()
	delete(p.c.peers, p)
	p.c.mu.Unlock()
	p.mu.Lock()
	p.finished = true
	p.exit = exit
	cleanups, onExit := p.cleanups, p.onExit
	p.cleanups, p.onExit = nil, nil
	p.mu.Unlock()
	if exit != nil {
		for _, fn := range onExit {
			fn(*exit)
		}
	}
	for _, fn := range cleanups {
		fn()
	}
}

// handshake introduces this process to the peer and, for a spawned
// child, subscribes to its lifetime events: both calls go out at once,
// with the first calls the program makes, and the handshake ends once
// both have returned. A child that does not answer within
// Options.StartTimeout, or speaks another version of the application, is
// ended. A peer without a control channel is no failure.
func (p *peer) handshake() {
	defer close(p.hsDone)
	// The connection's end fails the calls too.
	ctx, cancel := context.WithTimeout(context.Background(), p.c.opts.StartTimeout)
	defer cancel()
	if p.proc != nil {
		// The subscription must be in place before the child is asked
		// to stop (askToStop waits for the handshake), or its shutdown
		// events could miss the parent: a child whose Init takes
		// concurrent calls serves this call and stop in any order.
		subscribed := make(chan struct{})
		go func() {
			defer close(subscribed)
			p.subscribe(ctx)
		}()
		defer func() { <-subscribed }()
	}
	info, err := p.ctrl.Hello(ctx, p.c.ctx.LocalInfo())
	switch {
	case err == nil:
		p.info = info
		if err := checkPeer(p.c.ctx.LocalInfo(), info); err != nil {
			p.hsErr = err
			p.fail(err)
			return
		}
		p.log.Info("connected", "peer", DescribePeer(info))
	case errors.Is(err, mp.ErrUnimplemented):
		p.hsErr = ErrNoControl
		p.log.Info("connected to a peer without a control channel")
	case errors.Is(err, ErrVersionMismatch):
		p.hsErr = err
		p.fail(err)
	case ctx.Err() != nil && p.conn.Err() == nil:
		p.hsErr = fmt.Errorf("ipc: %s did not answer its handshake within %s", p.name, p.c.opts.StartTimeout)
		p.fail(p.hsErr)
	default:
		p.hsErr = fmt.Errorf("ipc: handshake with %s: %w", p.name, err)
	}
}

// subscribe subscribes to a spawned child's lifetime events; the
// subscription is released when the peer ends. A child without a control
// channel has none.
func (p *peer) subscribe(ctx context.Context) {
	sub, err := p.ctrl.SubscribeLifetime(ctx, &eventLogger{log: p.log})
	if err != nil {
		if !errors.Is(err, mp.ErrUnimplemented) {
			p.log.Debug("no lifetime events from the child", "err", err)
		}
		return
	}
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		mp.Release(sub)
		return
	}
	p.sub = sub
	p.mu.Unlock()
}

// askToStop asks a spawned child to shut down and waits until it has
// closed its end of the connection (its shutdown events arrive
// meanwhile), or until deadline. A child without a control channel is
// stopped by closing the connection.
func (p *peer) askToStop(hs <-chan struct{}, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	select {
	case <-hs:
	case <-ctx.Done():
	}
	if errors.Is(p.hsErr, ErrNoControl) {
		return
	}
	if err := p.ctrl.Stop(ctx); err != nil && !errors.Is(err, mp.ErrDisconnected) {
		p.log.Warn("asking the child to stop failed", "err", err)
	}
	select {
	case <-p.conn.Done():
	case <-ctx.Done():
		p.log.Warn("child did not shut down in time; killing it", "timeout", p.c.opts.ShutdownTimeout)
	}
}

// eventLogger logs the lifetime events a child streams to its parent at
// Debug: the child logs its own at Info, and a child spawned by this
// process shares its standard error.
type eventLogger struct{ log *slog.Logger }

func (e *eventLogger) Event(_ context.Context, ev *control.LifetimeEvent) error {
	if ev == nil {
		return errors.New("no event")
	}
	e.log.Debug("child lifetime event", "kind", ev.Kind.String(), "subsystem", subsystemName(ev), "seq", ev.Sequence)
	return nil
}

// peerOf returns the peer whose connection proxy (a value of a generated
// interface returned by Spawn or ConnectAddress, or a copy) is on.
func (c *core) peerOf(proxy any) (*peer, error) {
	p, ok := proxy.(interface{ MPClient() *mp.Client })
	if !ok || p.MPClient() == nil {
		return nil, fmt.Errorf("ipc: %T is not a proxy from Spawn or ConnectAddress", proxy)
	}
	conn, ok := protocol.ConnOf(p.MPClient().Capnp())
	if !ok {
		return nil, fmt.Errorf("ipc: %T is not a proxy from Spawn or ConnectAddress", proxy)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for pe := range c.peers {
		if pe.conn == conn {
			return pe, nil
		}
	}
	return nil, nil
}

// AddCleanup registers fn to run exactly once, when proxy (an Init
// returned by Spawn or ConnectAddress, or a copy of one) is released or
// its connection is lost, whichever comes first. For a spawned child, fn
// runs after the child has been stopped and reaped, so a caller that
// releases the proxy can wait for that.
func (i *Ipc[I]) AddCleanup(proxy I, fn func()) error {
	p, err := i.peerOf(proxy)
	if err != nil {
		return err
	}
	if p != nil {
		p.addCleanup(fn)
		return nil
	}
	if err := protocol.AddCleanup(any(proxy).(interface{ MPClient() *mp.Client }).MPClient().Capnp(), fn); err != nil {
		return fmt.Errorf("ipc: add cleanup: %w", err)
	}
	return nil
}

// OnExit registers fn to run with the child's exit (status, signal, time,
// whether it was asked to stop) once the child behind proxy, an Init
// returned by Spawn, has ended and been reaped. Register it right after
// Spawn: once a child's exit has been reported, this Ipc forgets the
// child, and OnExit returns an error.
func (i *Ipc[I]) OnExit(proxy I, fn func(ChildExit)) error {
	p, err := i.peerOf(proxy)
	if err != nil {
		return err
	}
	if p == nil || p.proc == nil {
		return errors.New("ipc: OnExit: not the Init of a spawned child, or the child has ended")
	}
	p.addOnExit(fn)
	return nil
}

// Handshake waits for the handshake with the peer behind proxy and returns
// the peer's PeerInfo, or an error: ErrNoControl for a peer without a
// control channel (which is no failure), ErrVersionMismatch, or why the
// peer did not answer.
func (i *Ipc[I]) Handshake(ctx context.Context, proxy I) (*control.PeerInfo, error) {
	p, err := i.peerOf(proxy)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("ipc: Handshake: the connection has ended")
	}
	select {
	case <-p.hsDone:
		return p.info, p.hsErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
