package integration

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// eventRecorder is a LifetimeListener in the test process.
type eventRecorder struct {
	mu      sync.Mutex
	events  []ipc.Event
	changed chan struct{}
}

func newEventRecorder() *eventRecorder { return &eventRecorder{changed: make(chan struct{}, 1)} }

func (r *eventRecorder) Event(_ context.Context, call schema.LifetimeListener_event) error {
	e, err := call.Args().Event()
	if err != nil {
		return err
	}
	ev, err := ipc.ReadEvent(e)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

// waitUntil waits until an event satisfies match and returns every event
// received so far.
func (r *eventRecorder) waitUntil(t *testing.T, what string, match func(ipc.Event) bool) []ipc.Event {
	t.Helper()
	timeout := time.After(deadline)
	for {
		r.mu.Lock()
		evs := append([]ipc.Event(nil), r.events...)
		r.mu.Unlock()
		for _, ev := range evs {
			if match(ev) {
				return evs
			}
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("no %s event within %s; got %v", what, deadline, evs)
		}
	}
}

func describe(evs []ipc.Event) string {
	s := ""
	for _, ev := range evs {
		s += fmt.Sprintf("%d:%s/%s ", ev.Sequence, ev.Kind, ev.Subsystem)
	}
	return s
}

// A client that subscribes to a running node's lifetime events over
// -ipcbind gets the node's whole history first, in order; on SIGTERM it
// receives the node's shutdown events before its connection ends.
func TestIPCBindClientWatchesNodeLifetime(t *testing.T) {
	dataDir := t.TempDir()
	node := start(t, "node", []string{"-datadir=" + dataDir, "-ipcbind=unix"}, nil)
	node.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")

	rec := newEventRecorder()
	listener := schema.LifetimeListener(protocol.NewServer(schema.LifetimeListener_Methods(nil, rec), rec, nil))
	ctx := testCtx(t)
	fut, release := init.SubscribeLifetime(ctx, func(p schema.Init_subscribeLifetime_Params) error {
		return p.SetListener(listener)
	})
	defer release()
	if _, err := fut.Struct(); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	evs := rec.waitUntil(t, "startupComplete", func(ev ipc.Event) bool {
		return ev.Kind == schema.LifetimeEvent_Kind_startupComplete
	})
	want := []string{"startup/process", "startup/database", "startup/ipcListener", "startup/walletProcess", "startupComplete/process"}
	if len(evs) != len(want) {
		t.Fatalf("history = %s, want %v", describe(evs), want)
	}
	for k, ev := range evs {
		if got := ev.Kind.String() + "/" + ev.Subsystem.String(); got != want[k] || ev.Sequence != uint64(k+1) || ev.Executable != "node" || ev.PID != node.cmd.Process.Pid {
			t.Fatalf("history = %s, want %v from node pid %d", describe(evs), want, node.cmd.Process.Pid)
		}
	}

	node.signal(t, syscall.SIGTERM)
	evs = rec.waitUntil(t, "shutdown of the IPC listener", func(ev ipc.Event) bool {
		return ev.Kind == schema.LifetimeEvent_Kind_shutdown && ev.Subsystem == schema.Subsystem_ipcListener
	})
	tail := describe(evs[len(want):])
	if want := "6:shutdown/walletProcess 7:shutdown/ipcListener "; tail != want {
		t.Fatalf("events after start-up = %q, want %q", tail, want)
	}
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
}

// A spawned wallet ignores SIGINT (a terminal's Ctrl-C reaches the whole
// process group) and still shuts down cleanly when its parent says so.
func TestWalletIgnoresSIGINT(t *testing.T) {
	node := start(t, "node", []string{"-datadir=" + t.TempDir()}, nil)
	pid := walletPid(t, node)
	node.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	if err := unix.Kill(pid, unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	// Give a default SIGINT disposition every chance to kill it.
	time.Sleep(200 * time.Millisecond)
	if state := procState(pid); state == "gone" || state == "Z" {
		t.Fatalf("wallet died of SIGINT (state %s); output:\n%s", state, node.out.String())
	}
	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	inOrder(t, node.out.String(), `msg="child process exited" .*child=wallet .*status="exit status 0"`)
}
