package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// eventRecorder is a LifetimeListener in the test process. It keeps each
// event as it arrived on the wire, and as package ipc reads it.
type eventRecorder struct {
	mu      sync.Mutex
	raw     []control.LifetimeEvent
	events  []ipc.Event
	changed chan struct{}
}

func newEventRecorder() *eventRecorder { return &eventRecorder{changed: make(chan struct{}, 1)} }

func (r *eventRecorder) Event(_ context.Context, ev *control.LifetimeEvent) error {
	if ev == nil {
		return errors.New("no event")
	}
	r.mu.Lock()
	r.raw = append(r.raw, *ev)
	r.events = append(r.events, ipc.EventFrom(ev))
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

// rawEvents returns the events received so far, as sent.
func (r *eventRecorder) rawEvents() []control.LifetimeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]control.LifetimeEvent(nil), r.raw...)
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
			t.Fatalf("no %s event within %s; got %s", what, deadline, describe(evs))
		}
	}
}

func isKind(kind control.LifetimeEvent_Kind, subsystem string) func(ipc.Event) bool {
	return func(ev ipc.Event) bool { return ev.Kind == kind && ev.Subsystem == subsystem }
}

// describe lists events as "seq:kind/subsystem", the process as a whole
// with no subsystem name.
func describe(evs []ipc.Event) []string {
	s := make([]string, len(evs))
	for k, ev := range evs {
		s[k] = fmt.Sprintf("%d:%s/%s", ev.Sequence, ev.Kind, ev.Subsystem)
	}
	return s
}

// controlOf returns the framework's control interface of the process
// behind init: the same capability, another of its interfaces.
func controlOf(init schema.Init) control.Control {
	return control.ControlInterface.FromCapnp(schema.InitInterface.Capnp(init))
}

// A client that subscribes to a running node's lifetime events over
// -ipcbind, through the framework's control channel, gets the node's
// whole history first, in order, each event naming its subsystem; on
// SIGTERM it receives the node's shutdown events before its connection
// ends.
func TestIPCBindClientWatchesNodeLifetime(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctrl := controlOf(init)
	defer mp.Release(ctrl)

	rec := newEventRecorder()
	sub, err := ctrl.SubscribeLifetime(testCtx(t), rec)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer mp.Release(sub)
	evs := rec.waitUntil(t, "startupComplete", isKind(control.LifetimeEvent_Kind_StartupComplete, ""))
	want := []string{"1:startup/", "2:startup/database", "3:startup/ipcListener", "4:startup/walletProcess", "5:startupComplete/"}
	if fmt.Sprint(describe(evs)) != fmt.Sprint(want) {
		t.Fatalf("history = %q, want %q", describe(evs), want)
	}
	for _, ev := range evs {
		if ev.Executable != "node" || ev.PID != node.cmd.Process.Pid {
			t.Fatalf("event %+v is not from node pid %d", ev, node.cmd.Process.Pid)
		}
	}

	node.signal(t, syscall.SIGTERM)
	evs = rec.waitUntil(t, "shutdown of the IPC listener", isKind(control.LifetimeEvent_Kind_Shutdown, ipc.SubsystemIPCListener))
	if tail, want := describe(evs[len(want):]), []string{"6:shutdown/walletProcess", "7:shutdown/ipcListener"}; fmt.Sprint(tail) != fmt.Sprint(want) {
		t.Fatalf("events after start-up = %q, want %q", tail, want)
	}
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
}

// A client written against the reference program's Init alone, before the
// framework's control channel (no handshake of its own), still works with
// the real node through the deprecated methods, which delegate to the
// control channel: hello answers with the node's PeerInfo and refuses
// another protocol version with an error naming both; subscribeLifetime
// streams the node's lifetime events, history first, in the old Subsystem
// enum too; stop shuts the node down, and its shutdown events reach the
// subscriber before the node exits 0.
func TestDeprecatedInitMethods(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix")
	ctx := testCtx(t)
	nc, err := net.Dial("unix", filepath.Join(dataDir, "node.sock"))
	if err != nil {
		t.Fatal(err)
	}
	conn, boot, err := protocol.Connect(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	init := schema.InitInterface.FromCapnp(boot)
	defer mp.Release(init)

	//lint:ignore SA1019 the deprecated method is what is tested
	callee, err := init.Hello(ctx, &schema.PeerInfo{ProtocolVersion: schema.ProtocolVersion, Build: "test", Executable: "oldclient", Pid: int32(os.Getpid())})
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	if callee.ProtocolVersion != schema.ProtocolVersion || callee.Executable != "node" || int(callee.Pid) != node.cmd.Process.Pid || callee.Build == "" {
		t.Errorf("hello answered %+v; want the node (pid %d), protocol version %d and a build", *callee, node.cmd.Process.Pid, schema.ProtocolVersion)
	}
	//lint:ignore SA1019 the deprecated method is what is tested
	_, err = init.Hello(ctx, &schema.PeerInfo{ProtocolVersion: schema.ProtocolVersion + 1, Build: "test", Executable: "oldclient", Pid: int32(os.Getpid())})
	if !errors.Is(err, ipc.ErrVersionMismatch) || !regexp.MustCompile(`node \(pid \d+.* oldclient \(pid`).MatchString(err.Error()) {
		t.Errorf("hello with another protocol version: %v; want ipc.ErrVersionMismatch naming both", err)
	}

	rec := newEventRecorder()
	//lint:ignore SA1019 the deprecated method is what is tested
	sub, err := init.SubscribeLifetime(ctx, rec)
	if err != nil {
		t.Fatalf("subscribeLifetime: %v", err)
	}
	defer mp.Release(sub)
	evs := rec.waitUntil(t, "startupComplete", isKind(control.LifetimeEvent_Kind_StartupComplete, ""))
	want := []string{"1:startup/", "2:startup/database", "3:startup/ipcListener", "4:startupComplete/"}
	if fmt.Sprint(describe(evs)) != fmt.Sprint(want) {
		t.Fatalf("history = %q, want %q", describe(evs), want)
	}

	//lint:ignore SA1019 the deprecated method is what is tested
	if err := init.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	rec.waitUntil(t, "shutdown of the IPC listener", isKind(control.LifetimeEvent_Kind_Shutdown, ipc.SubsystemIPCListener))
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	node.out.waitFor(t, lineRE(`msg="stop requested over IPC" process=node`))
	// An old client reads the subsystem from the enum.
	var legacy []string
	for _, ev := range rec.rawEvents() {
		legacy = append(legacy, ev.Kind.String()+"/"+ev.Subsystem.String())
	}
	if want := []string{"startup/process", "startup/database", "startup/ipcListener", "startupComplete/process", "shutdown/ipcListener"}; fmt.Sprint(legacy) != fmt.Sprint(want) {
		t.Errorf("events in the old enum = %q, want %q", legacy, want)
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
	if n := len(childPidRE.FindAllString(node.out.String(), -1)); n != 1 {
		t.Errorf("the node spawned %d wallets, want 1", n)
	}
}
