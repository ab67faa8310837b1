package integration

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// newIpc returns an Ipc for the test process that spawns the built
// executables, and closes it at the end of the test.
func newIpc(t *testing.T) *ipc.Ipc {
	t.Helper()
	fdcheck.Check(t, deadline)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("process", "test", "pid", os.Getpid())
	i := ipc.New("test", os.Args[0], nodeinit.NewInit, &ipc.Options{Logger: log, ExecutableDir: binDir})
	t.Cleanup(func() { _ = i.Close() })
	return i
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// peerPid asks the process behind init for its pid.
func peerPid(t *testing.T, init schema.Init) int {
	t.Helper()
	fut, release := init.Hello(context.Background(), func(p schema.Init_hello_Params) error {
		w, err := p.NewCaller()
		if err != nil {
			return err
		}
		w.SetProtocolVersion(schema.ProtocolVersion)
		if err := w.SetExecutable("test"); err != nil {
			return err
		}
		return w.SetBuild("test")
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	info, err := res.Callee()
	if err != nil {
		t.Fatal(err)
	}
	return int(info.Pid())
}

// Echo through the real wallet binary, small and 1 MiB.
func TestEchoThroughWallet(t *testing.T) {
	i := newIpc(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	for _, msg := range []string{"hi", strings.Repeat("0123456789abcdef", 1<<16)} {
		got, err := nodeinit.Echo(ctx, w, msg)
		if err != nil {
			t.Fatalf("echo %d bytes: %v", len(msg), err)
		}
		if got != msg {
			t.Fatalf("echo %d bytes returned %d bytes", len(msg), len(got))
		}
	}
}

// After the wallet is killed, a call returns a disconnection error instead
// of hanging, and releasing the proxy reaps the child.
func TestCallAfterWalletKilled(t *testing.T) {
	i := newIpc(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	pid := peerPid(t, w)
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	_, err = nodeinit.Echo(ctx, w, "anyone there?")
	if err == nil {
		t.Fatal("echo to a killed wallet succeeded")
	}
	if !protocol.IsDisconnected(err) {
		t.Errorf("echo to a killed wallet: %v; want a disconnection error", err)
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
