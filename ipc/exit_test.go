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
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
)

// childPid returns the pid of the child behind init, once it answers.
func childPid(t *testing.T, init testapp.Init) int {
	t.Helper()
	pid, err := init.Pid(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return int(pid)
}

// OnExit reports how and when a child ended, and whether this process
// had asked it to; calls on the Init of a dead child fail with
// ErrDisconnected.
func TestOnExit(t *testing.T) {
	cases := []struct {
		name      string
		end       func(t *testing.T, init testapp.Init, pid int)
		code      int
		signal    syscall.Signal
		requested bool
	}{
		{"kill -9", func(t *testing.T, _ testapp.Init, pid int) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}, -1, syscall.SIGKILL, false},
		{"os.Exit(3)", func(t *testing.T, init testapp.Init, _ int) {
			// The child exits before it answers.
			if err := init.Exit(testCtx(t), 3); !errors.Is(err, mp.ErrDisconnected) {
				t.Errorf("exit(3) = %v; want ErrDisconnected", err)
			}
		}, 3, 0, false},
		{"release", func(_ *testing.T, init testapp.Init, _ int) { mp.Release(init) }, 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			i := newTestIpc(t, "parent", "echo", nil)
			init := spawn(t, i, "child")
			exited := onExit(t, i, init)
			pid := childPid(t, init)
			before := time.Now()
			c.end(t, init, pid)
			e := waitExit(t, exited)
			if e.Name != "child" || e.PID != pid || e.Status.Code != c.code || e.Status.Signal != c.signal || e.Requested != c.requested {
				t.Errorf("exit = %+v; want child %d, code %d, signal %d, requested %v", e, pid, c.code, c.signal, c.requested)
			}
			if e.Time.Before(before) || time.Since(e.Time) > deadline {
				t.Errorf("exit time %s, not after %s", e.Time, before)
			}
			status := fmt.Sprintf("exit status %d", c.code)
			if c.signal != 0 {
				status = fmt.Sprintf("killed by signal %d", c.signal)
			}
			if want := "the child process exited (" + status + ") at "; !strings.HasPrefix(e.String(), want) {
				t.Errorf("exit reads %q; want it to start with %q", e, want)
			}
			if !c.requested {
				if _, err := init.Echo(testCtx(t), "after the exit"); !errors.Is(err, mp.ErrDisconnected) {
					t.Errorf("echo after the child's exit: %v; want ErrDisconnected", err)
				}
			}
			// The child is forgotten once its exit has been reported.
			if err := i.OnExit(init, func(ipc.ChildExit) { t.Error("OnExit after the exit ran") }); err == nil {
				t.Error("OnExit after the exit succeeded")
			}
			level := "level=ERROR"
			msg := `msg="child process exited unexpectedly"`
			if c.requested {
				level, msg = "level=INFO", `msg="child process exited"`
			}
			i.logs.wait(t, level, msg, "child=child", fmt.Sprintf("child_pid=%d", pid))
		})
	}
}

// A spawned child ignores SIGINT, SIGTERM and SIGHUP while its parent
// lives: it keeps answering, and shuts down cleanly when released.
func TestChildLeavesSignalsToParent(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", nil)
	init := spawn(t, i, "child")
	exited := onExit(t, i, init)
	// The child answers once it serves, after it set the signals aside.
	pid := childPid(t, init)
	sigs := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	if ign := ignoredSignals(t, pid); ign&sigMask(sigs...) != sigMask(sigs...) {
		t.Errorf("the child ignores signals %#x; want SIGINT, SIGTERM and SIGHUP among them", ign)
	}
	for _, s := range sigs {
		if err := syscall.Kill(pid, s); err != nil {
			t.Fatal(err)
		}
		if got, err := init.Echo(ctx, s.String()); err != nil || got != s.String() {
			t.Fatalf("echo after %v = %q, %v", s, got, err)
		}
	}
	mp.Release(init)
	if e := waitExit(t, exited); !e.Status.Success() || !e.Requested {
		t.Errorf("exit after the signals and release = %+v; want requested, exit status 0", e)
	}
}

// ignoredSignals reads the mask of signals process pid ignores.
func ignoredSignals(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			var m uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no SigIgn in /proc/%d/status", pid)
	return 0
}

func sigMask(sigs ...syscall.Signal) uint64 {
	var m uint64
	for _, s := range sigs {
		m |= 1 << (uint(s) - 1)
	}
	return m
}
