package ipc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/ipc/control"
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

func (r *recorder) Event(ctx context.Context, ev *control.LifetimeEvent) error {
	if r.block {
		select {
		case <-r.unblock:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.events = append(r.events, EventFrom(ev))
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
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
			r.mu.Lock()
			got := len(r.events)
			r.mu.Unlock()
			t.Fatalf("received %d events within %s, want %d", got, testDeadline, n)
		}
	}
}

// remote returns r as a LifetimeListener at the other end of a
// connection, which the test ends with the returned function (and at its
// end).
func (r *recorder) remote(t testing.TB) (control.LifetimeListener, func()) {
	t.Helper()
	a, b := socketPair(t)
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(context.Background(), b, func(*protocol.Conn) capnp.Client {
			return control.LifetimeListenerInterface.Capnp(r)
		}, nil)
	}()
	conn, boot, err := protocol.Connect(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	end := func() {
		once.Do(func() {
			conn.Close()
			<-served
		})
	}
	t.Cleanup(end)
	return control.LifetimeListenerInterface.FromCapnp(boot), end
}

// socketPair returns the two ends of a unix stream socketpair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conv(fds[0]), conv(fds[1])
}

func newTestLifetime(t *testing.T) (*Lifetime, *syncbuf.Buffer) {
	t.Helper()
	var logs syncbuf.Buffer
	l := newLifetime("test", slog.New(slog.NewTextHandler(&logs, nil)), nil)
	t.Cleanup(l.close)
	return l, &logs
}

func noop() (func(), error) { return nil, nil }

// A late subscriber receives the whole history in order, then live
// events; sequence numbers count up from 1 without gaps. Across a
// connection, subsystem names arrive as they were recorded.
func TestLifetimeReplaysHistoryThenLive(t *testing.T) {
	fdcheck.Check(t, testDeadline)
	l, _ := newTestLifetime(t)
	if err := l.Start("database", noop); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(SubsystemIPCListener, noop); err != nil {
		t.Fatal(err)
	}
	l.StartupComplete()

	r := newRecorder()
	listener, _ := r.remote(t)
	unsubscribe := l.Subscribe(listener)
	defer unsubscribe()
	l.Shutdown()

	want := []struct {
		kind control.LifetimeEvent_Kind
		sub  string
	}{
		{control.LifetimeEvent_Kind_Startup, ""},
		{control.LifetimeEvent_Kind_Startup, "database"},
		{control.LifetimeEvent_Kind_Startup, SubsystemIPCListener},
		{control.LifetimeEvent_Kind_StartupComplete, ""},
		{control.LifetimeEvent_Kind_Shutdown, SubsystemIPCListener},
		{control.LifetimeEvent_Kind_Shutdown, "database"},
		{control.LifetimeEvent_Kind_Shutdown, ""},
		{control.LifetimeEvent_Kind_ShutdownComplete, ""},
	}
	got := r.waitFor(t, len(want))
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Subsystem != w.sub || g.Sequence != uint64(i+1) || g.Executable != "test" || g.PID != pid {
			t.Errorf("event %d = %+v, want %s %q seq %d", i, g, w.kind, w.sub, i+1)
		}
	}
}

// Events carry the old Subsystem enum for peers that predate
// subsystemName: the framework's own subsystems and those the
// application maps in Options.LegacySubsystems, "process" for the rest;
// an old peer's event is read by its enum's name.
func TestLifetimeEventWire(t *testing.T) {
	legacy := map[string]control.Subsystem{"chain": control.Subsystem_Database}
	cases := []struct {
		sub  string
		want control.Subsystem
	}{
		{"", control.Subsystem_Process},
		{SubsystemIPCParent, control.Subsystem_IpcParent},
		{SubsystemIPCListener, control.Subsystem_IpcListener},
		{"chain", control.Subsystem_Database},
		{"cache", control.Subsystem_Process},
	}
	now := time.Now()
	for _, c := range cases {
		ev := Event{Kind: control.LifetimeEvent_Kind_Shutdown, Subsystem: c.sub, Executable: "x", PID: 7, Time: now, Sequence: 3}
		w := ev.wire(legacy)
		if w.Subsystem != c.want || w.SubsystemName != c.sub {
			t.Errorf("%q on the wire: subsystem %v, name %q; want %v, %q", c.sub, w.Subsystem, w.SubsystemName, c.want, c.sub)
		}
		if back := EventFrom(w); !back.Time.Equal(now) || back.Subsystem != c.sub || back.Kind != ev.Kind || back.PID != 7 || back.Sequence != 3 || back.Executable != "x" {
			t.Errorf("%q read back as %+v, want %+v", c.sub, back, ev)
		}
	}
	old := &control.LifetimeEvent{Kind: control.LifetimeEvent_Kind_Startup, Subsystem: control.Subsystem_WalletDatabase}
	if got := EventFrom(old).Subsystem; got != "walletDatabase" {
		t.Errorf("an old peer's walletDatabase event reads as %q", got)
	}
}

// Subsystems stop in reverse order of start-up, each after its shutdown
// event; a failed start is not stopped.
func TestLifetimeShutdownOrder(t *testing.T) {
	l, _ := newTestLifetime(t)
	var order []string
	for _, sub := range []string{"database", "walletDatabase"} {
		if err := l.Start(sub, func() (func(), error) {
			return func() {
				h := l.History()
				last := h[len(h)-1]
				if last.Kind != control.LifetimeEvent_Kind_Shutdown || last.Subsystem != sub {
					t.Errorf("stopping %s after event %s %s", sub, last.Kind, last.Subsystem)
				}
				order = append(order, sub)
			}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Start(SubsystemIPCListener, func() (func(), error) { return nil, syscall.EADDRINUSE }); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a failed start returned %v", err)
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
	l.Subscribe(stuck)
	healthy := newRecorder()
	l.Subscribe(healthy)

	// Record in batches that the healthy subscriber keeps up with; the
	// stuck one cannot, and recording must not wait for it.
	const batch, batches = 256, 8
	recorded := 1 // the process startup event
	for range batches {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range batch {
				l.record(control.LifetimeEvent_Kind_Startup, "database")
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
	remote := newRecorder()
	listener, disconnect := remote.remote(t)
	l.Subscribe(listener)
	local := newRecorder()
	l.Subscribe(local)
	remote.waitFor(t, 1)
	disconnect()
	for range 100 {
		l.record(control.LifetimeEvent_Kind_Startup, "database")
	}
	local.waitFor(t, 101)
	// Streamed calls report a failure on a later call: the subscriber is
	// dropped at the latest on an event after its connection is gone.
	deadline := time.Now().Add(testDeadline)
	for !strings.Contains(logs.String(), "dropping lifetime event subscriber") {
		if time.Now().After(deadline) {
			t.Fatalf("disconnected subscriber not dropped:\n%s", logs.String())
		}
		l.record(control.LifetimeEvent_Kind_Startup, "database")
		time.Sleep(10 * time.Millisecond)
	}
}

// Flush waits until every subscriber has received what was recorded; a
// subscriber that unsubscribes is no longer waited for.
func TestLifetimeFlush(t *testing.T) {
	l, _ := newTestLifetime(t)
	r := newRecorder()
	listener, _ := r.remote(t)
	l.Subscribe(listener)
	for range 50 {
		l.record(control.LifetimeEvent_Kind_Startup, "database")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	n := len(r.events)
	r.mu.Unlock()
	if n != 51 {
		t.Fatalf("after Flush the subscriber has %d events, want 51", n)
	}

	stuck := newRecorder()
	stuck.block = true
	defer close(stuck.unblock)
	unsubscribe := l.Subscribe(stuck)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := l.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with a stuck subscriber = %v; want DeadlineExceeded", err)
	}
	unsubscribe()
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush after the stuck subscriber left = %v", err)
	}
}

// Once Shutdown has begun, Start refuses; a start under way when it began
// is stopped as soon as it returns.
func TestLifetimeStartDuringShutdown(t *testing.T) {
	l, _ := newTestLifetime(t)
	l.Shutdown()
	ran := false
	err := l.Start("database", func() (func(), error) { ran = true; return nil, nil })
	if !errors.Is(err, ErrShuttingDown) || ran {
		t.Fatalf("Start after Shutdown = %v (start ran: %v); want ErrShuttingDown", err, ran)
	}

	l2, _ := newTestLifetime(t)
	stopped := false
	err = l2.Start("walletDatabase", func() (func(), error) {
		l2.Shutdown() // begins while this start is under way
		return func() { stopped = true }, nil
	})
	if !errors.Is(err, ErrShuttingDown) || !stopped {
		t.Fatalf("Start racing Shutdown = %v (stopped: %v); want ErrShuttingDown and stopped", err, stopped)
	}
}
