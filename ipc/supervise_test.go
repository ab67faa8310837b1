package ipc_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
)

// supervision is a supervised child and what the test learns about it.
type supervision struct {
	*ipc.Supervised[testapp.Init]
	i      *testIpc
	ctx    context.Context
	setups atomic.Int32       // setup runs
	pidCh  chan int           // setup sends each child's pid
	exits  chan ipc.ChildExit // what onExit was told
	// gate, if set, makes each setup after the first wait: it sends a
	// channel here, and goes on once the test closes it.
	gate chan chan struct{}
}

// supervise starts supervising the "echo" child under policy; setup
// counts its runs and, when gated, waits after the first for the test to
// let it go on.
func supervise(t *testing.T, policy ipc.RestartPolicy, gated bool) *supervision {
	t.Helper()
	s := &supervision{
		exits: make(chan ipc.ChildExit, 16),
		pidCh: make(chan int, 16),
		i:     newTestIpc(t, "parent", "echo", nil),
		ctx:   testCtx(t),
	}
	if gated {
		s.gate = make(chan chan struct{})
	}
	setup := func(ctx context.Context, child testapp.Init) error {
		n := s.setups.Add(1)
		pid, err := child.Pid(ctx)
		if err != nil {
			return err
		}
		s.pidCh <- int(pid)
		if n > 1 && s.gate != nil {
			proceed := make(chan struct{})
			select {
			case s.gate <- proceed:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-proceed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	sup, err := s.i.Supervise(s.ctx, ipc.ChildSpec{Name: "child"}, policy, setup, func(e ipc.ChildExit) { s.exits <- e })
	if err != nil {
		t.Fatal(err)
	}
	s.Supervised = sup
	t.Cleanup(sup.Stop)
	return s
}

// nextPid returns the pid of the next child that setup ran on.
func (s *supervision) nextPid(t *testing.T) int {
	t.Helper()
	select {
	case pid := <-s.pidCh:
		return pid
	case <-time.After(deadline):
		t.Fatal("no new child set up")
		return 0
	}
}

// current waits until Current returns the child pid and returns it.
func (s *supervision) current(t *testing.T, pid int) testapp.Init {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		init, err := s.Current()
		if err == nil {
			got, err := init.Pid(s.ctx)
			if err == nil && int(got) == pid {
				return init
			}
			mp.Release(init)
		}
		if time.Now().After(end) {
			t.Fatalf("Current did not return child %d: %v", pid, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *supervision) exit(t *testing.T) ipc.ChildExit {
	t.Helper()
	return waitExit(t, s.exits)
}

func kill9(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// downError returns Current's error as a *ChildDownError.
func (s *supervision) downError(t *testing.T) *ipc.ChildDownError {
	t.Helper()
	init, err := s.Current()
	var down *ipc.ChildDownError
	if !errors.As(err, &down) {
		mp.Release(init)
		t.Fatalf("Current = %v, %v; want a *ChildDownError", init, err)
	}
	return down
}

// A child killed with SIGKILL is reaped and reported, a new one is
// spawned after the backoff and set up again; meanwhile Current says the
// child is restarting, and why. Stop stops the child and supervision.
func TestSuperviseRestartsKilledChild(t *testing.T) {
	mptest.CheckLeaks(t)
	s := supervise(t, ipc.RestartPolicy{MaxRestarts: 3, Backoff: 20 * time.Millisecond}, true)
	first := s.nextPid(t)
	init := s.current(t, first)
	if got, err := init.Echo(s.ctx, "first"); err != nil || got != "first" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	kill9(t, first)
	e := s.exit(t)
	if e.PID != first || e.Status.Signal != syscall.SIGKILL || e.Requested || e.Name != "child" {
		t.Errorf("exit = %+v; want child %d killed by signal 9, not requested", e, first)
	}
	if _, err := init.Echo(s.ctx, "dead"); !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo on the killed child: %v; want ErrDisconnected", err)
	}
	mp.Release(init)

	// The new child is being set up: the old one is down, restarting.
	second := s.nextPid(t)
	proceed := <-s.gate
	down := s.downError(t)
	if !errors.Is(down, ipc.ErrChildRestarting) || errors.Is(down, ipc.ErrChildGaveUp) || down.GaveUp {
		t.Errorf("Current while restarting = %v; want it to match ErrChildRestarting only", down)
	}
	msg := down.Error()
	if !strings.HasPrefix(msg, "the child process exited (killed by signal 9) at ") || !strings.HasSuffix(msg, "; restarting") {
		t.Errorf("Current while restarting reads %q", msg)
	}
	if down.Exit != e {
		t.Errorf("Current's exit = %+v; want %+v", down.Exit, e)
	}
	close(proceed)

	if second == first {
		t.Fatalf("the new child has the old one's pid %d", first)
	}
	init = s.current(t, second)
	if got, err := init.Echo(s.ctx, "second"); err != nil || got != "second" {
		t.Errorf("echo on the new child = %q, %v", got, err)
	}
	mp.Release(init)
	if n := s.setups.Load(); n != 2 {
		t.Errorf("setup ran %d times; want 2", n)
	}
	s.i.logs.wait(t, `msg="child process restarted"`, "child=child", "restart=1")

	s.Stop()
	select {
	case <-s.Done():
	default:
		t.Error("Done is open after Stop")
	}
	s.Stop() // idempotent
	if _, err := s.Current(); err == nil {
		t.Error("Current after Stop returned a child")
	}
	if err := syscall.Kill(second, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d after Stop: %v; want it gone", second, err)
	}
	select {
	case e := <-s.exits:
		t.Errorf("onExit told of a requested stop: %+v", e)
	default:
	}
	// Nothing is left running: no goroutine of supervision, of the
	// child's connection or of its reaping.
	goleak.VerifyNone(t)
}

// Once more restarts than the policy allows within its window, supervision
// gives up: Current says so and Done closes.
func TestSuperviseGivesUp(t *testing.T) {
	s := supervise(t, ipc.RestartPolicy{MaxRestarts: 2, Window: time.Hour, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, false)
	for range 3 {
		pid := s.nextPid(t)
		mp.Release(s.current(t, pid))
		kill9(t, pid)
		if e := s.exit(t); e.PID != pid || e.Status.Signal != syscall.SIGKILL {
			t.Fatalf("exit = %+v; want child %d killed by signal 9", e, pid)
		}
	}
	select {
	case <-s.Done():
	case <-time.After(deadline):
		t.Fatal("supervision did not give up")
	}
	down := s.downError(t)
	if !errors.Is(down, ipc.ErrChildGaveUp) || errors.Is(down, ipc.ErrChildRestarting) || !down.GaveUp || down.Restarts != 2 {
		t.Errorf("Current after giving up = %+v; want it to match ErrChildGaveUp, after 2 restarts", down)
	}
	msg := down.Error()
	if !strings.HasPrefix(msg, "the child process exited (killed by signal 9) at ") || !strings.HasSuffix(msg, "; gave up after 2 restarts") {
		t.Errorf("Current after giving up reads %q", msg)
	}
	if n := s.setups.Load(); n != 3 {
		t.Errorf("setup ran %d times; want 3", n)
	}
	s.i.logs.wait(t, "level=ERROR", `msg="child process will not be restarted"`, `reason="gave up after 2 restarts"`)
}

// An exit that the policy calls permanent is never restarted.
func TestSupervisePermanentExit(t *testing.T) {
	permanent := func(e ipc.ChildExit) string {
		if e.Status.Code == 3 {
			return "that exit is permanent"
		}
		return ""
	}
	s := supervise(t, ipc.RestartPolicy{MaxRestarts: 5, Backoff: time.Millisecond, Permanent: permanent}, false)
	pid := s.nextPid(t)
	init := s.current(t, pid)
	defer mp.Release(init)
	if err := init.Exit(s.ctx, 3); !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("exit(3) = %v; want ErrDisconnected", err)
	}
	if e := s.exit(t); e.PID != pid || e.Status.Code != 3 || e.Requested {
		t.Fatalf("exit = %+v; want child %d, exit status 3, not requested", e, pid)
	}
	select {
	case <-s.Done():
	case <-time.After(deadline):
		t.Fatal("supervision did not end")
	}
	down := s.downError(t)
	if !errors.Is(down, ipc.ErrChildGaveUp) || !strings.HasPrefix(down.Error(), "the child process exited (exit status 3) at ") ||
		!strings.HasSuffix(down.Error(), "; not restarted: that exit is permanent") {
		t.Errorf("Current after a permanent exit = %v", down)
	}
	if n := s.setups.Load(); n != 1 {
		t.Errorf("setup ran %d times; want 1", n)
	}
	s.i.logs.wait(t, "level=ERROR", `msg="child process will not be restarted"`, `reason="that exit is permanent"`)
}

// A first setup that fails stops the child and is returned; closing the
// Ipc ends supervision.
func TestSuperviseSetupFailsAndClose(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	errSetup := errors.New("no thanks")
	var pid int32
	_, err := i.Supervise(ctx, ipc.ChildSpec{Name: "child"}, ipc.RestartPolicy{MaxRestarts: 1}, func(ctx context.Context, child testapp.Init) error {
		var err error
		if pid, err = child.Pid(ctx); err != nil {
			return err
		}
		return errSetup
	}, nil)
	if !errors.Is(err, errSetup) || !strings.Contains(err.Error(), "set up child") {
		t.Fatalf("Supervise with a failing setup: %v", err)
	}
	if err := syscall.Kill(int(pid), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d after the failed setup: %v; want it gone", pid, err)
	}

	sup, err := i.Supervise(ctx, ipc.ChildSpec{Name: "child"}, ipc.RestartPolicy{MaxRestarts: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sup.Done():
	default:
		t.Error("supervision goes on after Close")
	}
	if _, err := i.Supervise(ctx, ipc.ChildSpec{Name: "child"}, ipc.RestartPolicy{}, nil, nil); err == nil {
		t.Error("Supervise after Close succeeded")
	}
}
