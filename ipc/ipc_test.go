package ipc_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
)

// A spawned child answers calls and its handshake; releasing its Init
// stops it, after which the cleanup runs and OnExit reports a requested,
// clean exit.
func TestSpawnEchoAndRelease(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	exited := onExit(t, i, init)
	got, err := init.Echo(ctx, "ping")
	if err != nil || got != "ping" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	childPid, err := init.Pid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := i.Handshake(ctx, init)
	if err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	want := control.PeerInfo{ControlVersion: control.ControlVersion, Application: testApp, ApplicationVersion: testVersion, Executable: "child", Pid: childPid}
	if info.ControlVersion != want.ControlVersion || info.Application != want.Application || info.ApplicationVersion != want.ApplicationVersion ||
		info.Executable != want.Executable || info.Pid != want.Pid || info.Build == "" {
		t.Errorf("Handshake = %+v, want %+v and a build", *info, want)
	}
	i.logs.wait(t, `msg=connected`, "child=child", fmt.Sprintf("child_pid=%d", childPid), "peer=")

	cleaned := make(chan struct{})
	if err := i.AddCleanup(init, func() { close(cleaned) }); err != nil {
		t.Fatal(err)
	}
	mp.Release(init)
	select {
	case <-cleaned:
	case <-time.After(deadline):
		t.Fatal("cleanup did not run after release")
	}
	e := waitExit(t, exited)
	if !e.Requested || !e.Status.Success() || e.PID != int(childPid) || e.Name != "child" {
		t.Errorf("exit after release = %+v; want child %d, requested, exit status 0", e, childPid)
	}
	if err := i.OnExit(init, func(ipc.ChildExit) {}); err == nil {
		t.Error("OnExit on a released Init succeeded")
	}
}

// Echo returns its argument byte for byte, also large ones.
func TestEchoLarge(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	init := spawn(t, i, "child")
	for _, n := range []int{0, 1, 512<<10 - 1, 512 << 10, 512<<10 + 1, 1 << 20, 3<<20 + 7} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte('a' + (j*7+j/4096)%26)
		}
		got, err := init.Echo(ctx, string(b))
		if err != nil || got != string(b) {
			t.Fatalf("echo of %d bytes: %d bytes back, equal %v, err %v", n, len(got), got == string(b), err)
		}
	}
}

// A child of another version of the same application is ended: the
// handshake says why, naming both sides; calls fail with an error that
// matches both ErrVersionMismatch and mp.ErrDisconnected; the child is
// reaped.
func TestSpawnRefusesOtherApplicationVersion(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "otherversion", nil)
	// SpawnProcess does not wait for the handshake.
	init := spawn(t, i, "child")
	exited := onExit(t, i, init)
	_, err := i.Handshake(ctx, init)
	if !errors.Is(err, ipc.ErrVersionMismatch) {
		t.Fatalf("Handshake with a child of another version: %v; want ErrVersionMismatch", err)
	}
	for _, want := range []string{"parent (pid", "child (pid", testApp + " version 1", testApp + " version 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = init.Echo(ctx, "refused")
	if !errors.Is(err, ipc.ErrVersionMismatch) || !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo on a refused child: %v; want ErrVersionMismatch and ErrDisconnected", err)
	}
	// This process ended the child: the exit was expected.
	if e := waitExit(t, exited); !e.Requested {
		t.Errorf("exit of a refused child = %+v; want requested", e)
	}
	if !i.logs.has("level=ERROR", "ending the connection", "application version mismatch") {
		t.Errorf("the mismatch is not logged:\n%s", i.logs.String())
	}
}

// Processes of different applications do not compare versions.
func TestSpawnAcceptsOtherApplication(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "otherapp", nil)
	init := spawn(t, i, "child")
	info, err := i.Handshake(ctx, init)
	if err != nil || info.Application != "otherapp" || info.ApplicationVersion != testVersion+6 {
		t.Fatalf("Handshake with another application = %+v, %v", info, err)
	}
	if got, err := init.Echo(ctx, "fine"); err != nil || got != "fine" {
		t.Errorf("echo = %q, %v", got, err)
	}
}

func TestSpawnMissingExecutable(t *testing.T) {
	i := newTestIpc(t, "parent", "", nil)
	_, err := i.SpawnProcess(testCtx(t), "absent")
	if err == nil || !strings.Contains(err.Error(), "absent") || !strings.Contains(err.Error(), "does not play that role") {
		t.Fatalf("spawn of a missing executable: %v", err)
	}
	if _, err := i.SpawnProcess(testCtx(t), "../absent"); err == nil {
		t.Fatal("spawn of a path as a name succeeded")
	}
}

func TestStartSpawnedProcessNotSpawned(t *testing.T) {
	i := ipc.New("x", "", testapp.InitInterface, nil, nil)
	defer i.Close()
	if handled, status := i.StartSpawnedProcess([]string{"x", "-datadir=/tmp"}); handled || status != 0 {
		t.Fatalf("StartSpawnedProcess without -ipcfd = %v, %d", handled, status)
	}
	if handled, status := i.StartSpawnedProcess([]string{"x", "-ipcfd", "abc"}); !handled || status != 1 {
		t.Fatalf("StartSpawnedProcess with a bad -ipcfd = %v, %d", handled, status)
	}
}

// Close stops the children; calls on their Init fail afterwards, and so
// does a spawn.
func TestCloseStopsChildren(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	init := spawn(t, i, "child")
	exited := onExit(t, i, init)
	if _, err := init.Echo(ctx, "before close"); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exited); !e.Requested || !e.Status.Success() {
		t.Errorf("exit after Close = %+v; want requested, exit status 0", e)
	}
	if _, err := init.Echo(ctx, "after close"); !errors.Is(err, mp.ErrDisconnected) {
		t.Fatalf("echo after Close: %v; want ErrDisconnected", err)
	}
	if _, err := i.SpawnProcess(ctx, "child"); err == nil {
		t.Fatal("spawn after Close succeeded")
	}
	if err := i.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A child that does not answer within the start timeout is killed, reaped
// and reported; Handshake says why.
func TestSpawnStartTimeout(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "silent", &ipc.Options{StartTimeout: 300 * time.Millisecond})
	init := spawn(t, i, "child")
	exited := onExit(t, i, init)
	_, err := i.Handshake(ctx, init)
	if err == nil || !strings.Contains(err.Error(), "child did not answer its handshake within 300ms") {
		t.Fatalf("Handshake with a silent child: %v", err)
	}
	if e := waitExit(t, exited); e.Status.Signal != syscall.SIGKILL || !e.Requested {
		t.Errorf("silent child exit = %+v; want killed by signal 9, requested", e)
	}
	if !i.logs.has(`msg="child process exited"`, "child=child", "killed by signal 9") {
		t.Errorf("silent child not reported killed:\n%s", i.logs.String())
	}
	if _, err := init.Echo(ctx, "too late"); !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo on a killed child: %v; want ErrDisconnected", err)
	}
}

// Releasing the Init stops the child through the control channel: the
// child's shutdown events reach the parent before the child exits 0.
func TestReleaseStopsChildGracefully(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	if err := i.AddCleanup(init, func() { close(reaped) }); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Handshake(ctx, init); err != nil {
		t.Fatal(err)
	}
	mp.Release(init)
	select {
	case <-reaped:
	case <-time.After(deadline):
		t.Fatal("child not reaped after release")
	}
	out := i.logs.String()
	// The child closes its connection to the parent only once its last
	// event, shutdownComplete, is recorded and delivered.
	last := -1
	if lines := i.logs.Lines(`msg="child lifetime event"`, "child=child", "kind=shutdownComplete"); len(lines) > 0 {
		last = strings.Index(out, lines[0])
	}
	exited := strings.Index(out, `status="exit status 0"`)
	if last < 0 || exited < 0 || last > exited {
		t.Fatalf("want the child's shutdownComplete event before its exit status 0:\n%s", out)
	}
}

// The control channel is not held up by the application: a child whose
// Init takes one call at a time, busy with a long call, still answers
// its handshake and stops at once when released (it is not killed after
// the shutdown timeout).
func TestControlNotHeldUpByApplication(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "serial", &ipc.Options{ShutdownTimeout: time.Minute})
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	exited := onExit(t, i, init)
	if _, err := init.Pid(ctx); err != nil {
		t.Fatal(err)
	}
	busy := make(chan error, 1)
	go func() {
		_, err := init.EchoAfter(ctx, "late", 50_000)
		busy <- err
	}()
	// The child logs its "delaying an echo" to its own stderr: give the
	// call time to arrive (were it late, the test would check less, but
	// not fail).
	time.Sleep(200 * time.Millisecond)
	if _, err := i.Handshake(ctx, init); err != nil {
		t.Fatalf("handshake while the Init is busy: %v", err)
	}
	mp.Release(init)
	e := waitExit(t, exited)
	if !e.Status.Success() {
		t.Fatalf("child busy with a long call exited with %s after release, want 0 (a stop held up is killed)", e.Status)
	}
	if err := <-busy; !errors.Is(err, mp.ErrDisconnected) {
		t.Fatalf("the long call = %v, want ErrDisconnected", err)
	}
}

// A spawned child without a control channel (a bare Init served with
// package protocol) is usable: calls work, Handshake says ErrNoControl,
// release closes the connection and the child exits 0, and nothing is
// logged as an error.
func TestSpawnChildWithoutControl(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "bare", nil)
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	exited := onExit(t, i, init)
	if got, err := init.Echo(ctx, "bare"); err != nil || got != "bare" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if info, err := i.Handshake(ctx, init); !errors.Is(err, ipc.ErrNoControl) || info != nil {
		t.Fatalf("Handshake with a bare child = %v, %v; want ErrNoControl", info, err)
	}
	if got, err := init.Echo(ctx, "still"); err != nil || got != "still" {
		t.Fatalf("echo after the handshake = %q, %v", got, err)
	}
	mp.Release(init)
	if e := waitExit(t, exited); !e.Requested || !e.Status.Success() {
		t.Errorf("exit of a bare child after release = %+v; want requested, exit status 0", e)
	}
	if !i.logs.has("connected to a peer without a control channel") {
		t.Errorf("no log line for the missing control channel:\n%s", i.logs.String())
	}
	if errs := i.logs.Lines("level=ERROR"); len(errs) > 0 {
		t.Errorf("errors logged with a bare child:\n%s", strings.Join(errs, "\n"))
	}
}

// A role this binary does not play ends the child with status 2; the
// handshake and calls fail, and the exit is reported.
func TestSpawnUnknownRole(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "", &ipc.Options{Stderr: devNull(t)})
	init, err := i.Spawn(ctx, ipc.ChildSpec{Name: "nobody", Role: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(init)
	exited := onExit(t, i, init)
	if _, err := i.Handshake(ctx, init); err == nil {
		t.Error("Handshake with a child in an unknown role succeeded")
	}
	if _, err := init.Echo(ctx, "nobody"); !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo on a child in an unknown role: %v; want ErrDisconnected", err)
	}
	if e := waitExit(t, exited); e.Status.Code != 2 || e.Requested {
		t.Errorf("exit of a child in an unknown role = %+v; want exit status 2, not requested", e)
	}
}

// devNull returns /dev/null opened for writing, closed at the end of the
// test, for the standard error of children whose complaints are expected.
func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
