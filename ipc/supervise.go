package ipc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gomultiprocess/multiprocess/mp"
)

// A RestartPolicy says when a supervised child that exits by itself is
// started again. The zero policy never restarts.
type RestartPolicy struct {
	// MaxRestarts is how many restarts are allowed within Window; after
	// that, supervision gives up. Zero means never restart.
	MaxRestarts int
	// Window is the span MaxRestarts counts over. Zero means a minute.
	Window time.Duration
	// Backoff is the wait before the first restart; it doubles after
	// each restart, up to MaxBackoff, and starts again from Backoff once
	// a child has run for a whole Window. Zeros mean 100 ms and 5 s.
	Backoff, MaxBackoff time.Duration
	// Permanent, if set, says which exits are never restarted (a child
	// that exits with a status meaning its data is damaged, say): it
	// returns why ("its data is damaged"), and supervision gives up at
	// once; "" means the exit may be restarted.
	Permanent func(ChildExit) string
}

func (p RestartPolicy) withDefaults() RestartPolicy {
	if p.Window <= 0 {
		p.Window = time.Minute
	}
	if p.Backoff <= 0 {
		p.Backoff = 100 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 5 * time.Second
	}
	return p
}

// Errors of a supervised child that is down. They are declared errors:
// they keep their identity across processes (a node relaying that its
// wallet is restarting), and errors.Is tells them apart from an
// application's own "not running" errors.
var (
	// ErrChildRestarting: the child exited and is being restarted.
	ErrChildRestarting = mp.NewErrorOfType(mp.Overloaded, "ipc.childRestarting", "the child process is restarting")
	// ErrChildGaveUp: the child exited and supervision gave up on it.
	ErrChildGaveUp = mp.NewError("ipc.childGaveUp", "the child process is not running")
)

// A ChildDownError says why a supervised child cannot be called now: it
// reads "the wallet process exited (killed by signal 9) at 15:04:05;
// restarting", or "...; gave up after 3 restarts", and matches
// ErrChildRestarting or ErrChildGaveUp.
type ChildDownError struct {
	Exit     ChildExit
	Restarts int  // restarts made so far
	GaveUp   bool // supervision has given up
	Reason   string
}

func (e *ChildDownError) Error() string {
	if !e.GaveUp {
		return e.Exit.String() + "; restarting"
	}
	if e.Reason != "" {
		return e.Exit.String() + "; " + e.Reason
	}
	return fmt.Sprintf("%s; gave up after %d restarts", e.Exit, e.Restarts)
}

func (e *ChildDownError) Unwrap() error {
	if e.GaveUp {
		return ErrChildGaveUp
	}
	return ErrChildRestarting
}

// Supervised is a child process that is restarted when it exits by
// itself, under a RestartPolicy: see Ipc.Supervise.
type Supervised[I any] struct {
	s    *supervisor
	init *mp.Interface[I]
}

// supervisor is the part of a Supervised that does not depend on its
// Init's type.
type supervisor struct {
	c      *core
	spec   ChildSpec
	policy RestartPolicy
	// setup runs on each new child, with its bootstrap as a go-capnp
	// client borrowed for the call.
	setup  func(context.Context, *peerChild) error
	onExit func(ChildExit)
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	current  *peerChild // the running child; nil while down
	down     *ChildDownError
	restarts []time.Time // within the window
	total    int
	// backoff is the wait before the next restart: it doubles with each
	// restart, and goes back to the policy's once a child has run for a
	// whole window. Touched only by run.
	backoff time.Duration
}

// peerChild is one run of a supervised child.
type peerChild struct {
	p       *peer
	boot    any // the child's Init, of the Supervised's type
	exited  chan ChildExit
	started time.Time
}

// Supervise spawns the child spec describes, runs setup on it, and keeps
// it running: when it exits without having been asked to, onExit (if not
// nil) learns how, the old child has been reaped, and, as long as policy
// allows, a new one is spawned after the policy's backoff and setup runs
// on it again. While the child is down, Current returns a *ChildDownError.
// Calls that were in flight when the child died fail (they are never
// retried behind the caller's back).
//
// If the first spawn or setup fails, Supervise stops the child and
// returns the error. Stop, or closing the Ipc, stops supervision and the
// child. ctx bounds the first spawn and setup only.
func (i *Ipc[I]) Supervise(ctx context.Context, spec ChildSpec, policy RestartPolicy, setup func(ctx context.Context, child I) error, onExit func(ChildExit)) (*Supervised[I], error) {
	sctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{
		c:      i.core,
		spec:   spec,
		policy: policy.withDefaults(),
		onExit: onExit,
		ctx:    sctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	s.setup = func(ctx context.Context, pc *peerChild) error {
		if setup == nil {
			return nil
		}
		return setup(ctx, pc.boot.(I))
	}
	spawn := func(ctx context.Context) (*peerChild, error) {
		p, boot, err := i.spawnPeer(ctx, spec)
		if err != nil {
			return nil, err
		}
		pc := &peerChild{p: p, boot: i.init.FromCapnp(boot), exited: make(chan ChildExit, 1), started: time.Now()}
		p.addOnExit(func(e ChildExit) { pc.exited <- e })
		return pc, nil
	}
	first, err := s.start(ctx, spawn)
	if err != nil {
		cancel()
		return nil, err
	}
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		s.stopChild(first)
		cancel()
		return nil, fmt.Errorf("ipc: supervise %s: %w", spec.Name, errClosed)
	}
	i.supervisors[s] = struct{}{}
	i.tasks.Add(1)
	i.mu.Unlock()
	s.current = first
	go func() {
		defer i.tasks.Done()
		defer close(s.done)
		s.run(first, spawn)
		i.mu.Lock()
		delete(i.supervisors, s)
		i.mu.Unlock()
	}()
	return &Supervised[I]{s: s, init: i.init}, nil
}

// start spawns a child and runs setup on it; on failure the child is
// stopped.
func (s *supervisor) start(ctx context.Context, spawn func(context.Context) (*peerChild, error)) (*peerChild, error) {
	pc, err := spawn(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.setup(ctx, pc); err != nil {
		s.stopChild(pc)
		return nil, fmt.Errorf("ipc: set up %s: %w", s.spec.Name, err)
	}
	return pc, nil
}

// stopChild releases the child's Init, which stops it, and waits until it
// has been reaped.
func (s *supervisor) stopChild(pc *peerChild) {
	mp.Release(pc.boot)
	pc.p.stop()
}

func (s *supervisor) run(pc *peerChild, spawn func(context.Context) (*peerChild, error)) {
	for {
		var exit ChildExit
		select {
		case exit = <-pc.exited:
		case <-s.ctx.Done():
			s.mu.Lock()
			s.current = nil
			s.mu.Unlock()
			s.stopChild(pc)
			return
		}
		// The child has been reaped (OnExit runs after that).
		mp.Release(pc.boot)
		if s.backoff == 0 || time.Since(pc.started) >= s.policy.Window {
			s.backoff = s.policy.Backoff
		}
		if s.onExit != nil {
			s.onExit(exit)
		}
		pc = s.restart(exit, spawn)
		if pc == nil {
			return
		}
	}
}

// restart spawns the next child under the policy, with backoff, until
// one starts or the policy gives up (nil).
func (s *supervisor) restart(exit ChildExit, spawn func(context.Context) (*peerChild, error)) *peerChild {
	for {
		backoff := s.backoff
		now := time.Now()
		s.mu.Lock()
		s.current = nil
		kept := s.restarts[:0]
		for _, t := range s.restarts {
			if now.Sub(t) < s.policy.Window {
				kept = append(kept, t)
			}
		}
		s.restarts = kept
		// why is what the log line says after "will not be restarted";
		// reason is what the child's callers are told.
		var why, reason string
		switch {
		case s.ctx.Err() != nil:
			s.mu.Unlock()
			return nil
		case s.policy.Permanent != nil && s.policy.Permanent(exit) != "":
			why = s.policy.Permanent(exit)
			reason = "not restarted: " + why
		case len(s.restarts) >= s.policy.MaxRestarts:
			why = fmt.Sprintf("gave up after %d restarts", s.total)
			reason = why
		}
		if reason != "" {
			s.down = &ChildDownError{Exit: exit, Restarts: s.total, GaveUp: true, Reason: reason}
			s.mu.Unlock()
			s.c.ctx.Logger.Error("child process will not be restarted", "child", s.spec.Name, "exit", exit.Status.String(), "reason", why)
			return nil
		}
		s.down = &ChildDownError{Exit: exit, Restarts: s.total}
		s.restarts = append(s.restarts, now)
		s.total++
		n := s.total
		s.mu.Unlock()

		s.c.ctx.Logger.Warn("restarting child process", "child", s.spec.Name, "restart", n, "after", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return nil
		}
		s.backoff = min(2*backoff, s.policy.MaxBackoff)
		pc, err := s.start(s.ctx, spawn)
		if err == nil {
			s.mu.Lock()
			if s.ctx.Err() != nil {
				s.mu.Unlock()
				s.stopChild(pc)
				return nil
			}
			s.current, s.down = pc, nil
			s.mu.Unlock()
			s.c.ctx.Logger.Info("child process restarted", "child", s.spec.Name, "restart", n)
			return pc
		}
		s.c.ctx.Logger.Error("restarting child process failed", "child", s.spec.Name, "err", err)
		if errors.Is(err, errClosed) {
			return nil
		}
		exit = ChildExit{Name: s.spec.Name, Time: time.Now(), Status: exit.Status}
	}
}

// stopSupervising ends supervision and stops the child, and waits.
func (s *supervisor) stopSupervising() {
	s.cancel()
	<-s.done
}

// Current returns a new reference to the running child's Init, which the
// caller releases (mp.Release), or, while the child is down, a
// *ChildDownError saying since when and whether it is being restarted.
func (s *Supervised[I]) Current() (I, error) {
	var zero I
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	if s.s.current == nil {
		if s.s.down != nil {
			return zero, s.s.down
		}
		return zero, errors.New("ipc: supervision has stopped")
	}
	return mp.Retain(s.s.current.boot.(I)), nil
}

// Stop ends supervision: the child is asked to stop, given the shutdown
// timeout, killed if need be, and reaped. Stop waits for all of it and is
// idempotent.
func (s *Supervised[I]) Stop() { s.s.stopSupervising() }

// Done is closed once supervision has ended: after Stop, or once the
// policy gave up.
func (s *Supervised[I]) Done() <-chan struct{} { return s.s.done }
