package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3/flowcontrol"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// Event is one lifetime event of a process.
type Event struct {
	Kind       schema.LifetimeEvent_Kind
	Subsystem  schema.Subsystem
	Executable string
	PID        int
	Time       time.Time
	Sequence   uint64 // 1 for the process's first event
}

func (e Event) write(w schema.LifetimeEvent) error {
	w.SetKind(e.Kind)
	w.SetSubsystem(e.Subsystem)
	w.SetPid(int32(e.PID))
	w.SetTimeUnixNano(e.Time.UnixNano())
	w.SetSequence(e.Sequence)
	return w.SetExecutable(e.Executable)
}

// ReadEvent decodes an event received from another process.
func ReadEvent(r schema.LifetimeEvent) (Event, error) {
	exe, err := r.Executable()
	if err != nil {
		return Event{}, fmt.Errorf("read executable: %w", err)
	}
	return Event{
		Kind:       r.Kind(),
		Subsystem:  r.Subsystem(),
		Executable: exe,
		PID:        int(r.Pid()),
		Time:       time.Unix(0, r.TimeUnixNano()),
		Sequence:   r.Sequence(),
	}, nil
}

// Limits of a lifetime subscription.
const (
	// MaxQueuedEvents is how many live events a subscriber may fall behind
	// (on top of the history replayed to it) before it is dropped.
	MaxQueuedEvents = 1024
	// streamWindow bounds the bytes of streamed event calls in flight to
	// one subscriber; each event is a few hundred bytes.
	streamWindow = 4 << 10
)

// Lifetime records a process's lifetime events, as dcrd's lifetimeevent
// messages do, and streams them to subscribers: each first receives every
// event recorded before it subscribed, in order, then the live ones.
// Recording never blocks on a subscriber: each has a bounded queue, and one
// that falls further behind is dropped with a logged reason.
//
// Subsystems start through Start and stop in reverse order through
// Shutdown, with an event before each.
type Lifetime struct {
	exe string
	log *slog.Logger

	// subs owns the subscribers' sending goroutines.
	subs sync.WaitGroup

	mu          sync.Mutex
	seq         uint64
	history     []Event
	subscribers map[*subscriber]struct{}
	stages      []stage // started subsystems, in start-up order
	shutdown    bool
}

type stage struct {
	subsystem schema.Subsystem
	stop      func()
}

func newLifetime(exe string, log *slog.Logger) *Lifetime {
	l := &Lifetime{exe: exe, log: log, subscribers: make(map[*subscriber]struct{})}
	l.record(schema.LifetimeEvent_Kind_startup, schema.Subsystem_process)
	return l
}

// record appends an event to the history and queues it for every
// subscriber.
func (l *Lifetime) record(kind schema.LifetimeEvent_Kind, sub schema.Subsystem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	ev := Event{Kind: kind, Subsystem: sub, Executable: l.exe, PID: pid, Time: time.Now(), Sequence: l.seq}
	l.history = append(l.history, ev)
	l.log.Info("lifetime event", "kind", kind.String(), "subsystem", sub.String(), "seq", ev.Sequence)
	for s := range l.subscribers {
		select {
		case s.queue <- item{event: ev}:
		default:
			l.dropLocked(s, fmt.Errorf("more than %d events behind", MaxQueuedEvents))
		}
	}
}

// Start records that subsystem is about to start and runs start. When
// start succeeds, the stop function it returns (which may be nil) runs at
// Shutdown, in reverse order of start-up, after the subsystem's shutdown
// event.
//
// Once Shutdown has begun, Start refuses with ErrShuttingDown; a subsystem
// whose start was under way when it began is stopped as soon as its start
// returns.
func (l *Lifetime) Start(subsystem schema.Subsystem, start func() (stop func(), err error)) error {
	l.mu.Lock()
	down := l.shutdown
	l.mu.Unlock()
	if down {
		return fmt.Errorf("start %s: %w", subsystem, ErrShuttingDown)
	}
	l.record(schema.LifetimeEvent_Kind_startup, subsystem)
	stop, err := start()
	if err != nil {
		return fmt.Errorf("start %s: %w", subsystem, err)
	}
	l.mu.Lock()
	down = l.shutdown
	if !down {
		l.stages = append(l.stages, stage{subsystem, stop})
	}
	l.mu.Unlock()
	if down {
		l.record(schema.LifetimeEvent_Kind_shutdown, subsystem)
		if stop != nil {
			stop()
		}
		return fmt.Errorf("start %s: %w", subsystem, ErrShuttingDown)
	}
	return nil
}

// ErrShuttingDown is returned by Lifetime.Start once Shutdown has begun.
var ErrShuttingDown = errors.New("ipc: process is shutting down")

// StartupComplete records that every subsystem has started.
func (l *Lifetime) StartupComplete() {
	l.record(schema.LifetimeEvent_Kind_startupComplete, schema.Subsystem_process)
}

// Shutdown stops the started subsystems in reverse order of start-up,
// recording a shutdown event before each, then records that the process
// has shut down. Only the first call does anything.
func (l *Lifetime) Shutdown() {
	l.mu.Lock()
	if l.shutdown {
		l.mu.Unlock()
		return
	}
	l.shutdown = true
	l.mu.Unlock()
	for {
		l.mu.Lock()
		n := len(l.stages)
		if n == 0 {
			l.mu.Unlock()
			break
		}
		st := l.stages[n-1]
		l.stages = l.stages[:n-1]
		l.mu.Unlock()
		l.record(schema.LifetimeEvent_Kind_shutdown, st.subsystem)
		if st.stop != nil {
			st.stop()
		}
	}
	l.record(schema.LifetimeEvent_Kind_shutdown, schema.Subsystem_process)
	l.record(schema.LifetimeEvent_Kind_shutdownComplete, schema.Subsystem_process)
}

// History returns a copy of every event recorded so far.
func (l *Lifetime) History() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.history...)
}

// item is what a subscriber's queue carries: an event, or a flush marker
// that is closed once everything before it has been delivered.
type item struct {
	event   Event
	flushed chan struct{}
}

type subscriber struct {
	listener schema.LifetimeListener
	queue    chan item
	ctx      context.Context
	cancel   context.CancelFunc
	gone     chan struct{} // closed when the sending goroutine has ended
}

// Subscribe streams events to listener, history first, and returns the
// function that ends the subscription. Subscribe takes over listener's
// reference. log receives the reason if the subscriber is dropped.
func (l *Lifetime) Subscribe(listener schema.LifetimeListener) (unsubscribe func()) {
	listener.SetFlowLimiter(flowcontrol.NewFixedLimiter(streamWindow))
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{listener: listener, ctx: ctx, cancel: cancel, gone: make(chan struct{})}
	l.mu.Lock()
	s.queue = make(chan item, len(l.history)+MaxQueuedEvents)
	for _, ev := range l.history {
		s.queue <- item{event: ev}
	}
	l.subscribers[s] = struct{}{}
	l.subs.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.subs.Done()
		defer close(s.gone)
		defer listener.Release()
		l.send(s)
	}()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.removeLocked(s)
	}
}

// send delivers a subscriber's queue until it is closed or the
// subscriber fails.
func (l *Lifetime) send(s *subscriber) {
	for it := range s.queue {
		if it.flushed != nil {
			err := s.listener.WaitStreaming()
			close(it.flushed)
			if err != nil {
				l.drop(s, err)
				return
			}
			continue
		}
		ev := it.event
		err := s.listener.Event(s.ctx, func(p schema.LifetimeListener_event_Params) error {
			w, err := p.NewEvent()
			if err != nil {
				return err
			}
			return ev.write(w)
		})
		if err != nil {
			l.drop(s, err)
			return
		}
	}
}

func (l *Lifetime) drop(s *subscriber, reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked(s, reason)
}

func (l *Lifetime) dropLocked(s *subscriber, reason error) {
	if _, ok := l.subscribers[s]; !ok {
		return
	}
	if errors.Is(reason, context.Canceled) {
		reason = errors.New("unsubscribed")
	}
	l.log.Warn("dropping lifetime event subscriber", "reason", reason)
	l.removeLocked(s)
}

// removeLocked ends a subscription: its goroutine stops sending and
// releases the listener.
func (l *Lifetime) removeLocked(s *subscriber) {
	if _, ok := l.subscribers[s]; !ok {
		return
	}
	delete(l.subscribers, s)
	s.cancel()
	close(s.queue)
}

// Flush waits until every subscriber has received every event recorded
// so far, or ctx ends.
func (l *Lifetime) Flush(ctx context.Context) error {
	type pending struct {
		s       *subscriber
		flushed chan struct{}
	}
	var ps []pending
	l.mu.Lock()
	for s := range l.subscribers {
		p := pending{s, make(chan struct{})}
		select {
		case s.queue <- item{flushed: p.flushed}:
			ps = append(ps, p)
		default:
			l.dropLocked(s, fmt.Errorf("more than %d events behind", MaxQueuedEvents))
		}
	}
	l.mu.Unlock()
	for _, p := range ps {
		select {
		case <-p.flushed:
		case <-p.s.gone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// close ends every subscription and waits for their goroutines.
func (l *Lifetime) close() {
	l.mu.Lock()
	for s := range l.subscribers {
		l.removeLocked(s)
	}
	l.mu.Unlock()
	l.subs.Wait()
}
