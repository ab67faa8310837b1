package ipc_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

const deadline = 30 * time.Second

func newTestIpc(t *testing.T, dir string) *ipc.Ipc {
	t.Helper()
	fdcheck.Check(t, deadline)
	i := ipc.New("parent", "", childInits["echo"], &ipc.Options{
		Logger:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ExecutableDir:   dir,
		ShutdownTimeout: 5 * time.Second,
	})
	t.Cleanup(func() { _ = i.Close() })
	return i
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func echo(ctx context.Context, init schema.Init, msg string) (string, error) {
	made, release := init.MakeEcho(ctx, nil)
	defer release()
	fut, release2 := made.Result().Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(msg) })
	defer release2()
	res, err := fut.Struct()
	if err != nil {
		return "", err
	}
	return res.Result()
}

func TestSpawnEchoAndRelease(t *testing.T) {
	dir := childDir(t, "child", "echo")
	i := newTestIpc(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	got, err := echo(ctx, init, "ping")
	if err != nil || got != "ping" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	cleaned := make(chan struct{})
	if err := i.AddCleanup(capnp.Client(init), func() { close(cleaned) }); err != nil {
		t.Fatal(err)
	}
	init.Release()
	select {
	case <-cleaned:
	case <-time.After(deadline):
		t.Fatal("cleanup did not run after release")
	}
}

// Echo returns its argument byte for byte, also when it is copied in
// pieces (arguments of 512 KiB and more).
func TestEchoLarge(t *testing.T) {
	dir := childDir(t, "child", "echo")
	i := newTestIpc(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	defer init.Release()
	for _, n := range []int{0, 1, 512<<10 - 1, 512 << 10, 512<<10 + 1, 1 << 20, 3<<20 + 7} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte('a' + (j*7+j/4096)%26)
		}
		got, err := echo(ctx, init, string(b))
		if err != nil || got != string(b) {
			t.Fatalf("echo of %d bytes: %d bytes back, equal %v, err %v", n, len(got), got == string(b), err)
		}
	}
}

func TestSpawnRefusesOtherProtocolVersion(t *testing.T) {
	dir := childDir(t, "child", "oldversion")
	i := newTestIpc(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := i.SpawnProcess(ctx, "child")
	if !errors.Is(err, ipc.ErrVersionMismatch) {
		t.Fatalf("spawn of an old child: %v; want ErrVersionMismatch", err)
	}
	for _, want := range []string{"parent", "child", "v0.0.0-old", "protocol 1", "protocol 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSpawnMissingExecutable(t *testing.T) {
	i := newTestIpc(t, t.TempDir())
	_, err := i.SpawnProcess(context.Background(), "absent")
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("spawn of a missing executable: %v", err)
	}
}

func TestStartSpawnedProcessNotSpawned(t *testing.T) {
	i := ipc.New("x", "", childInits["echo"], nil)
	if handled, status := i.StartSpawnedProcess([]string{"x", "-datadir=/tmp"}); handled || status != 0 {
		t.Fatalf("StartSpawnedProcess without -ipcfd = %v, %d", handled, status)
	}
	if handled, status := i.StartSpawnedProcess([]string{"x", "-ipcfd", "abc"}); !handled || status != 1 {
		t.Fatalf("StartSpawnedProcess with a bad -ipcfd = %v, %d", handled, status)
	}
}

func TestCloseStopsChildren(t *testing.T) {
	dir := childDir(t, "child", "echo")
	i := newTestIpc(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	defer init.Release()
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := echo(ctx, init, "after close"); !protocol.IsDisconnected(err) {
		t.Fatalf("echo after Close: %v; want a disconnection error", err)
	}
	if _, err := i.SpawnProcess(ctx, "child"); err == nil {
		t.Fatal("spawn after Close succeeded")
	}
}

// A child that does not answer within the start timeout is killed, reaped
// and reported.
func TestSpawnStartTimeout(t *testing.T) {
	fdcheck.Check(t, deadline)
	dir := childDir(t, "child", "silent")
	var logs syncbuf.Buffer
	i := ipc.New("parent", "", childInits["echo"], &ipc.Options{
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
		ExecutableDir: dir,
		StartTimeout:  500 * time.Millisecond,
	})
	defer i.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := i.SpawnProcess(ctx, "child")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("spawn of a silent child: %v; want a deadline error", err)
	}
	if !strings.Contains(logs.String(), `msg="child process exited" child=child`) ||
		!strings.Contains(logs.String(), "killed by signal 9") {
		t.Fatalf("silent child not reported killed:\n%s", logs.String())
	}
}

// Releasing the proxy stops the child through Init.stop: the child's
// shutdown events reach the parent before the child exits 0.
func TestReleaseStopsChildGracefully(t *testing.T) {
	fdcheck.Check(t, deadline)
	dir := childDir(t, "child", "echo")
	var logs syncbuf.Buffer
	i := ipc.New("parent", "", childInits["echo"], &ipc.Options{
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
		ExecutableDir: dir,
	})
	defer i.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	init, err := i.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	if err := i.AddCleanup(capnp.Client(init), func() { close(reaped) }); err != nil {
		t.Fatal(err)
	}
	init.Release()
	select {
	case <-reaped:
	case <-time.After(deadline):
		t.Fatal("child not reaped after release")
	}
	out := logs.String()
	ev := strings.Index(out, "kind=shutdown subsystem=ipcParent")
	exited := strings.Index(out, `status="exit status 0"`)
	if ev < 0 || exited < 0 || ev > exited {
		t.Fatalf("want the child's shutdown event before its exit status 0:\n%s", out)
	}
}
