package integration

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// newIpc returns an Ipc for the test process, speaking the reference
// program's contract, that spawns the programs in binDir, and closes it at
// the end of the test.
func newIpc(t *testing.T) *ipc.Ipc[schema.Init] {
	t.Helper()
	return newIpcWith(t, nil)
}

// newIpcWith is newIpc with options that set changes.
func newIpcWith(t *testing.T, set func(*ipc.Options)) *ipc.Ipc[schema.Init] {
	t.Helper()
	fdcheck.Check(t, deadline)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("process", "test", "pid", os.Getpid())
	opts := &ipc.Options{
		Logger:             log,
		ExecutableDir:      binDir,
		Application:        schema.Application,
		ApplicationVersion: schema.ProtocolVersion,
	}
	if set != nil {
		set(opts)
	}
	i := ipc.New("test", os.Args[0], schema.InitInterface, nodeinit.NewInit, opts)
	t.Cleanup(func() { _ = i.Close() })
	return i
}

// newSpawner is newIpc for a test that spawns the programs itself: their
// output is collected, fails the test if it reports a data race, and is
// logged if the test fails.
func newSpawner(t *testing.T) *ipc.Ipc[schema.Init] {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, r)
	}()
	// Runs after the Ipc's Close (cleanups run last first), which has
	// reaped every child holding w.
	t.Cleanup(func() {
		w.Close()
		<-copied
		r.Close()
		switch {
		case strings.Contains(out.String(), "DATA RACE"):
			t.Errorf("a child reported a data race:\n%s", out.String())
		case t.Failed():
			t.Logf("the children's output:\n%s", out.String())
		}
	})
	return newIpcWith(t, func(o *ipc.Options) { o.Stdout, o.Stderr = w, w })
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// peerPid returns the pid of the process behind init, which it told in
// the framework's handshake.
func peerPid(t *testing.T, i *ipc.Ipc[schema.Init], init schema.Init) int {
	t.Helper()
	info, err := i.Handshake(testCtx(t), init)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return int(info.Pid)
}

// Echo through the real wallet program, small and 1 MiB.
func TestEchoThroughWallet(t *testing.T) {
	i := newSpawner(t)
	ctx := testCtx(t)
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(w)
	for _, msg := range []string{"hi", strings.Repeat("0123456789abcdef", 1<<16)} {
		got, err := nodeinit.Echo(ctx, w, msg)
		if err != nil {
			t.Fatalf("echo %d bytes: %v", len(msg), err)
		}
		if got != msg {
			t.Fatalf("echo %d bytes returned %d bytes", len(msg), len(got))
		}
	}
	info, err := i.Handshake(ctx, w)
	if err != nil || info.Executable != "wallet" || info.Application != schema.Application || info.ApplicationVersion != schema.ProtocolVersion {
		t.Errorf("handshake with the wallet = %+v, %v", info, err)
	}
}

// After the wallet is killed, a call returns a disconnection error instead
// of hanging, OnExit reports the signal, and releasing the proxy is enough
// to be done with the child.
func TestCallAfterWalletKilled(t *testing.T) {
	i := newSpawner(t)
	ctx := testCtx(t)
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(w)
	exited := make(chan ipc.ChildExit, 1)
	if err := i.OnExit(w, func(e ipc.ChildExit) { exited <- e }); err != nil {
		t.Fatal(err)
	}
	pid := peerPid(t, i, w)
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	_, err = nodeinit.Echo(ctx, w, "anyone there?")
	if err == nil {
		t.Fatal("echo to a killed wallet succeeded")
	}
	if !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo to a killed wallet: %v; want mp.ErrDisconnected", err)
	}
	select {
	case e := <-exited:
		if e.Requested || e.Status.Signal != unix.SIGKILL || e.PID != pid {
			t.Errorf("exit of the killed wallet = %+v; want pid %d, SIGKILL, not requested", e, pid)
		}
	case <-ctx.Done():
		t.Fatal("OnExit did not report the killed wallet")
	}
}

// Spawning an executable that does not exist is an error naming it.
func TestSpawnUnknownExecutable(t *testing.T) {
	i := newIpc(t)
	_, err := i.SpawnProcess(context.Background(), "no-such-wallet")
	if err == nil || !strings.Contains(err.Error(), "no-such-wallet") {
		t.Fatalf("spawn of a missing executable: %v", err)
	}
}
