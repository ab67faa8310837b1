package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
)

// Event is one lifetime event of a process.
type Event struct {
	Kind control.LifetimeEvent_Kind
	// Subsystem names the subsystem, as the application chose; empty for
	// the process as a whole.
	Subsystem  string
	Executable string
	PID        int
	Time       time.Time
	Sequence   uint64 // 1 for the process's first event
}

// wire returns the event as sent, with the old Subsystem enum value
// that legacy maps its name to (process if it does not).
func (e Event) wire(legacy map[string]control.Subsystem) *control.LifetimeEvent {
	old := control.Subsystem_Process
	if v, ok := legacy[e.Subsystem]; ok {
		old = v
	} else if v, ok := frameworkSubsystems[e.Subsystem]; ok {
		old = v
	}
	return &control.LifetimeEvent{
		Kind:          e.Kind,
		Subsystem:     old,
		Executable:    e.Executable,
		Pid:           int32(e.PID),
		TimeUnixNano:  e.Time.UnixNano(),
		Sequence:      e.Sequence,
		SubsystemName: e.Subsystem,
	}
}

// EventFrom reads an event received from another process: its subsystem
// is subsystemName, or the old enum's name for a peer that predates it.
func EventFrom(ev *control.LifetimeEvent) Event {
	return Event{
		Kind:       ev.Kind,
		Subsystem:  subsystemName(ev),
		Executable: ev.Executable,
		PID:        int(ev.Pid),
		Time:       time.Unix(0, ev.TimeUnixNano),
		Sequence:   ev.Sequence,
	}
}

func subsystemName(ev *control.LifetimeEvent) string {
	if ev.SubsystemName != "" || ev.Subsystem == control.Subsystem_Process {
		return ev.SubsystemName
	}
	return ev.Subsystem.String()
}

// The framework's own subsystems, and their values in the old enum.
const (
	// SubsystemIPCParent is a spawned process serving its parent.
	SubsystemIPCParent = "ipcParent"
	// SubsystemIPCListener is a process accepting connections on the
	// addresses given to ListenAddress.
	SubsystemIPCListener = "ipcListener"
)

var frameworkSubsystems = map[string]control.Subsystem{
	SubsystemIPCParent:   control.Subsystem_IpcParent,
	SubsystemIPCListener: control.Subsystem_IpcListener,
}

// Limits of a lifetime subscription.
const (
	// MaxQueuedEvents is how many live events a subscriber may fall behind
	// (on top of the history replayed to it) before it is dropped.
	MaxQueuedEvents = 1024
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
	exe    string
	log    *slog.Logger
	legacy map[string]control.Subsystem

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
	subsystem string
	stop      func()
}

func newLifetime(exe string, log *slog.Logger, legacy map[string]control.Subsystem) *Lifetime {
	l := &Lifetime{exe: exe, log: log, legacy: legacy, subscribers: make(map[*subscriber]struct{})}
	l.record(control.LifetimeEvent_Kind_Startup, "")
	return l
}

// record appends an event to the history and queues it for every
// subscriber.
func (l *Lifetime) record(kind control.LifetimeEvent_Kind, sub string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	ev := Event{Kind: kind, Subsystem: sub, Executable: l.exe, PID: pid, Time: time.Now(), Sequence: l.seq}
	l.history = append(l.history, ev)
	l.log.Info("lifetime event", "kind", kind.String(), "subsystem", sub, "seq", ev.Sequence)
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
func (l *Lifetime) Start(subsystem string, start func() (stop func(), err error)) error {
	l.mu.Lock()
	down := l.shutdown
	l.mu.Unlock()
	if down {
		return fmt.Errorf("start %s: %w", subsystem, ErrShuttingDown)
	}
	l.record(control.LifetimeEvent_Kind_Startup, subsystem)
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
		l.record(control.LifetimeEvent_Kind_Shutdown, subsystem)
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
	l.record(control.LifetimeEvent_Kind_StartupComplete, "")
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
		l.record(control.LifetimeEvent_Kind_Shutdown, st.subsystem)
		if st.stop != nil {
			st.stop()
		}
	}
	l.record(control.LifetimeEvent_Kind_Shutdown, "")
	l.record(control.LifetimeEvent_Kind_ShutdownComplete, "")
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
	listener control.LifetimeListener
	queue    chan item
	ctx      context.Context
	cancel   context.CancelFunc
	gone     chan struct{} // closed when the sending goroutine has ended
}

// Subscribe streams events to listener, history first, and returns the
// function that ends the subscription. Subscribe takes over listener's
// reference (see mp.Retain). The reason a subscriber is dropped is
// logged.
func (l *Lifetime) Subscribe(listener control.LifetimeListener) (unsubscribe func()) {
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
		defer mp.Release(listener)
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
			err := mp.Flush(s.ctx, s.listener)
			close(it.flushed)
			if err != nil {
				l.drop(s, err)
				return
			}
			continue
		}
		if err := s.listener.Event(s.ctx, it.event.wire(l.legacy)); err != nil {
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
