package ipc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/protocol"
)

const testDeadline = 30 * time.Second

// recorder is a LifetimeListener that keeps what it receives; when block
// is set, each call blocks until unblock is closed.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	got     chan struct{} // signalled on each event
	block   bool
	unblock chan struct{}
}

func newRecorder() *recorder {
	return &recorder{got: make(chan struct{}, 1<<16), unblock: make(chan struct{})}
}

func (r *recorder) Event(ctx context.Context, call schema.LifetimeListener_event) error {
	if r.block {
		select {
		case <-r.unblock:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ev, err := eventOf(call)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
}

func eventOf(call schema.LifetimeListener_event) (Event, error) {
	e, err := call.Args().Event()
	if err != nil {
		return Event{}, err
	}
	return ReadEvent(e)
}

func (r *recorder) waitFor(t *testing.T, n int) []Event {
	t.Helper()
	timeout := time.After(testDeadline)
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			evs := append([]Event(nil), r.events...)
			r.mu.Unlock()
			return evs
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-timeout:
			t.Fatalf("received %d events within %s, want %d", len(r.events), testDeadline, n)
		}
	}
}

func (r *recorder) listener() schema.LifetimeListener {
	return schema.LifetimeListener(protocol.NewServer(schema.LifetimeListener_Methods(nil, r), r, nil))
}

func newTestLifetime(t *testing.T) (*Lifetime, *syncbuf.Buffer) {
	t.Helper()
	var logs syncbuf.Buffer
	l := newLifetime("test", slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(l.close)
	return l, &logs
}

func noop() (func(), error) { return nil, nil }

// A late subscriber receives the whole history in order, then live
// events; sequence numbers count up from 1 without gaps.
func TestLifetimeReplaysHistoryThenLive(t *testing.T) {
	l, _ := newTestLifetime(t)
	if err := l.Start(schema.Subsystem_database, noop); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(schema.Subsystem_ipcListener, noop); err != nil {
		t.Fatal(err)
	}
	l.StartupComplete()

	r := newRecorder()
	unsubscribe := l.Subscribe(r.listener())
	defer unsubscribe()
	l.Shutdown()

	want := []struct {
		kind schema.LifetimeEvent_Kind
		sub  schema.Subsystem
	}{
		{schema.LifetimeEvent_Kind_startup, schema.Subsystem_process},
		{schema.LifetimeEvent_Kind_startup, schema.Subsystem_database},
		{schema.LifetimeEvent_Kind_startup, schema.Subsystem_ipcListener},
		{schema.LifetimeEvent_Kind_startupComplete, schema.Subsystem_process},
		{schema.LifetimeEvent_Kind_shutdown, schema.Subsystem_ipcListener},
		{schema.LifetimeEvent_Kind_shutdown, schema.Subsystem_database},
		{schema.LifetimeEvent_Kind_shutdown, schema.Subsystem_process},
		{schema.LifetimeEvent_Kind_shutdownComplete, schema.Subsystem_process},
	}
	got := r.waitFor(t, len(want))
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Subsystem != w.sub || g.Sequence != uint64(i+1) || g.Executable != "test" || g.PID != pid {
			t.Errorf("event %d = %+v, want %s %s seq %d", i, g, w.kind, w.sub, i+1)
		}
	}
}

// Subsystems stop in reverse order of start-up, each after its shutdown
// event; a failed start is not stopped.
func TestLifetimeShutdownOrder(t *testing.T) {
	l, _ := newTestLifetime(t)
	var order []string
	for _, sub := range []schema.Subsystem{schema.Subsystem_database, schema.Subsystem_walletDatabase} {
		if err := l.Start(sub, func() (func(), error) {
			return func() {
				h := l.History()
				last := h[len(h)-1]
				if last.Kind != schema.LifetimeEvent_Kind_shutdown || last.Subsystem != sub {
					t.Errorf("stopping %s after event %s %s", sub, last.Kind, last.Subsystem)
				}
				order = append(order, sub.String())
			}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Start(schema.Subsystem_ipcListener, func() (func(), error) { return nil, syscall.EADDRINUSE }); err == nil {
		t.Fatal("a failed start returned no error")
	}
	l.Shutdown()
	l.Shutdown()
	if got := strings.Join(order, ","); got != "walletDatabase,database" {
		t.Fatalf("stop order = %s", got)
	}
}

// A subscriber that never takes its events is dropped with a logged
// reason, and recording never waits for it.
func TestLifetimeDropsStuckSubscriber(t *testing.T) {
	l, logs := newTestLifetime(t)
	stuck := newRecorder()
	stuck.block = true
	defer close(stuck.unblock)
	l.Subscribe(stuck.listener())
	healthy := newRecorder()
	l.Subscribe(healthy.listener())

	// Record in batches that the healthy subscriber keeps up with; the
	// stuck one cannot, and recording must not wait for it.
	const batch, batches = 256, 8
	recorded := 1 // the process startup event
	for range batches {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range batch {
				l.record(schema.LifetimeEvent_Kind_startup, schema.Subsystem_database)
			}
		}()
		select {
		case <-done:
		case <-time.After(testDeadline):
			t.Fatal("recording blocked on a stuck subscriber")
		}
		recorded += batch
		healthy.waitFor(t, recorded)
	}
	if !strings.Contains(logs.String(), "dropping lifetime event subscriber") {
		t.Fatalf("no drop logged:\n%s", logs.String())
	}
	if got := len(healthy.waitFor(t, recorded)); got != recorded {
		t.Fatalf("healthy subscriber got %d events, want %d", got, recorded)
	}
}

// A subscriber whose connection goes mid-stream is dropped; the process
// keeps recording and the other subscribers keep receiving.
func TestLifetimeSubscriberDisconnects(t *testing.T) {
	fdcheck.Check(t, testDeadline)
	l, logs := newTestLifetime(t)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := fileConn(t, fds[0]), fileConn(t, fds[1])
	remote := newRecorder()
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(context.Background(), b, func(*protocol.Conn) capnpClient {
			return capnpClient(remote.listener())
		}, nil)
	}()
	conn, boot, err := protocol.Connect(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Subscribe(schema.LifetimeListener(boot))
	local := newRecorder()
	l.Subscribe(local.listener())
	remote.waitFor(t, 1)
	conn.Close()
	<-served
	for range 100 {
		l.record(schema.LifetimeEvent_Kind_startup, schema.Subsystem_database)
	}
	local.waitFor(t, 101)
	// Streamed calls report a failure on a later call: the subscriber is
	// dropped at the latest on an event after its connection is gone.
	deadline := time.Now().Add(testDeadline)
	for !strings.Contains(logs.String(), "dropping lifetime event subscriber") {
		if time.Now().After(deadline) {
			t.Fatalf("disconnected subscriber not dropped:\n%s", logs.String())
		}
		l.record(schema.LifetimeEvent_Kind_startup, schema.Subsystem_database)
		time.Sleep(10 * time.Millisecond)
	}
}

func fileConn(t *testing.T, fd int) net.Conn {
	t.Helper()
	f := osNewFile(fd)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Once Shutdown has begun, Start refuses; a start under way when it began
// is stopped as soon as it returns.
func TestLifetimeStartDuringShutdown(t *testing.T) {
	l, _ := newTestLifetime(t)
	l.Shutdown()
	ran := false
	err := l.Start(schema.Subsystem_database, func() (func(), error) { ran = true; return nil, nil })
	if !errors.Is(err, ErrShuttingDown) || ran {
		t.Fatalf("Start after Shutdown = %v (start ran: %v); want ErrShuttingDown", err, ran)
	}

	l2, _ := newTestLifetime(t)
	stopped := false
	err = l2.Start(schema.Subsystem_walletDatabase, func() (func(), error) {
		l2.Shutdown() // begins while this start is under way
		return func() { stopped = true }, nil
	})
	if !errors.Is(err, ErrShuttingDown) || !stopped {
		t.Fatalf("Start racing Shutdown = %v (stopped: %v); want ErrShuttingDown and stopped", err, stopped)
	}
}
