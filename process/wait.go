package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ExitStatus is how a child process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal ended the process.
	Code int
	// Signal is the signal that ended the process, or 0 when it exited.
	Signal syscall.Signal
}

// Success reports whether the process exited by itself with code 0.
func (s ExitStatus) Success() bool { return s.Code == 0 && s.Signal == 0 }

// String returns "exit status 3" or "killed by signal 9 (killed)".
func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return fmt.Sprintf("killed by signal %d (%v)", int(s.Signal), s.Signal)
	}
	return fmt.Sprintf("exit status %d", s.Code)
}

// unknownStatus stands in where no status could be had (a Wait that gave up,
// a wait that failed): Code -1 so that it never looks like success.
var unknownStatus = ExitStatus{Code: -1}

func statusOf(ps *os.ProcessState) ExitStatus {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return ExitStatus{Code: ps.ExitCode()}
	}
	if ws.Signaled() {
		return ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}

// Child is a process started by [Spawn].
//
// Exactly one goroutine, started by Spawn and owned by the Child, waits for
// the process and reaps it; it then records the status and closes done. Every
// other method only reads what that goroutine published after done is
// closed, so they are safe to call from any goroutine, any number of times.
// A Child that is never stopped keeps that goroutine until the process exits
// by itself: whoever spawns a child must Stop (or Wait for) it.
type Child struct {
	cmd  *exec.Cmd
	path string
	args []string

	done chan struct{}
	// Written by the reaper goroutine before it closes done; read only after.
	status  ExitStatus
	waitErr error
}

// startReaper takes over cmd, which has been started, and reaps it in a
// goroutine of its own.
func startReaper(cmd *exec.Cmd) *Child {
	c := &Child{
		cmd:  cmd,
		path: cmd.Path,
		args: append([]string(nil), cmd.Args...),
		done: make(chan struct{}),
	}
	go c.reap()
	return c
}

func (c *Child) reap() {
	defer close(c.done)
	// exec.Cmd.Wait reports a non-zero exit as an *exec.ExitError; that is a
	// status, not a failure. Only a missing ProcessState means the wait
	// itself failed (for example ECHILD when SIGCHLD is ignored).
	err := c.cmd.Wait()
	if ps := c.cmd.ProcessState; ps != nil {
		c.status = statusOf(ps)
		return
	}
	c.status = unknownStatus
	c.waitErr = fmt.Errorf("process: wait for pid %d: %w", c.Pid(), err)
}

// Pid returns the child's process id. It stays valid after the child is
// reaped, but may then name an unrelated process.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Path returns the executable the child was started from.
func (c *Child) Path() string { return c.path }

// Args returns the argv the child was started with: [path, "-ipcfd", "3"].
func (c *Child) Args() []string { return append([]string(nil), c.args...) }

// Done returns a channel that is closed once the child has exited and been
// reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait blocks until the child has been reaped and returns how it ended, or
// returns ctx's error if ctx ends first (the child is left running). The
// status is meaningful only when the error is nil.
func (c *Child) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-c.done:
		return c.status, c.waitErr
	default:
	}
	select {
	case <-c.done:
		return c.status, c.waitErr
	case <-ctx.Done():
		return unknownStatus, ctx.Err()
	}
}

// Signal sends sig to the child. Once the child has been reaped its pid may
// belong to another process, so Signal then refuses, with an error wrapping
// [os.ErrProcessDone].
func (c *Child) Signal(sig os.Signal) error {
	select {
	case <-c.done:
		return fmt.Errorf("process: signal pid %d: %w", c.Pid(), os.ErrProcessDone)
	default:
	}
	// os.Process itself guards against the race with the reaper (it signals
	// through a pidfd, or holds off the wait while signalling by pid).
	if err := c.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("process: signal pid %d: %w", c.Pid(), err)
	}
	return nil
}

// Kill sends SIGKILL to the child; see [Child.Signal].
func (c *Child) Kill() error { return c.Signal(syscall.SIGKILL) }

// Stop waits up to grace for the child to exit by itself, then kills it with
// SIGKILL, and always reaps it before returning its final status. Callers
// close the child's socket first: a spawned child exits when its socket
// closes, so the grace period is its chance to shut down cleanly.
func (c *Child) Stop(grace time.Duration) ExitStatus {
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-c.done:
			t.Stop()
			return c.status
		case <-t.C:
		}
	}
	// An error here means the child exited meanwhile (ErrProcessDone) or
	// cannot be signalled at all; either way waiting below is what is left.
	_ = c.Kill()
	// SIGKILL cannot be caught, blocked or ignored, and it also ends a
	// stopped process, so this wait is bounded by the kernel.
	<-c.done
	return c.status
}
