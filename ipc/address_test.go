package ipc_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/process"
)

// addrLog collects an Ipc's log lines for assertions.
type addrLog struct{ syncbuf.Buffer }

func (l *addrLog) has(parts ...string) bool { return l.count(parts...) > 0 }

// count returns how many lines contain every one of parts.
func (l *addrLog) count(parts ...string) int { return len(l.Lines(parts...)) }

// newListeningIpc returns the Ipc of an executable called "node" that
// serves BaseInit, logging at Debug into the returned log (and to t.Log),
// and closes it at the end of the test.
func newListeningIpc(t *testing.T, opts ipc.Options) (*ipc.Ipc, *addrLog) {
	t.Helper()
	fdcheck.Check(t, deadline)
	logs := &addrLog{}
	opts.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	i := ipc.New("node", "", childInits["echo"], &opts)
	t.Cleanup(func() { _ = i.Close() })
	return i, logs
}

// newClientIpc returns an Ipc for connecting, closed at the end of the
// test. Its log is silent: the many-cycles test would flood t.Log.
func newClientIpc(t *testing.T) *ipc.Ipc {
	t.Helper()
	fdcheck.Check(t, deadline)
	i := ipc.New("wallet", "", childInits["echo"], nil)
	t.Cleanup(func() { _ = i.Close() })
	return i
}

// shortDir returns a new directory with a path short enough for sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

func TestListenAddressAndConnectAddress(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server, logs := newListeningIpc(t, ipc.Options{})
	def, err := server.ListenAddress(dir, "unix")
	if want := "unix:" + filepath.Join(dir, "node.sock"); err != nil || def != want {
		t.Fatalf("ListenAddress(unix) = %q, %v; want %q", def, err, want)
	}
	other, err := server.ListenAddress(dir, "unix:sub/other.sock")
	if want := "unix:" + filepath.Join(dir, "sub", "other.sock"); err != nil || other != want {
		t.Fatalf("ListenAddress(unix:sub/other.sock) = %q, %v; want %q", other, err, want)
	}
	for _, a := range []string{def, other} {
		path := strings.TrimPrefix(a, "unix:")
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|0o600 {
			t.Errorf("%s: %v, %v; want a socket of mode 0600", path, fi.Mode(), err)
		}
		if !logs.has(`msg="listening for IPC connections"`, "address="+a) {
			t.Errorf("no log line for listening on %s", a)
		}
	}

	client := newClientIpc(t)
	lost := make(chan struct{}, 2)
	for _, a := range []string{"unix", "unix:", other, "auto"} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil || !init.IsValid() {
			t.Fatalf("ConnectAddress(%q) = %v, %v", a, init, err)
		}
		if got, err := echo(ctx, init, "via "+a); err != nil || got != "via "+a {
			t.Errorf("echo via %q = %q, %v", a, got, err)
		}
		if a == def || a == other {
			if err := client.AddCleanup(capnp.Client(init), func() { lost <- struct{}{} }); err != nil {
				t.Fatal(err)
			}
			defer init.Release()
		} else {
			init.Release()
		}
	}
	for _, a := range []string{"unix", other} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil {
			t.Fatalf("ConnectAddress(%q): %v", a, err)
		}
		if err := client.AddCleanup(capnp.Client(init), func() { lost <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		defer init.Release()
	}

	// DisconnectIncoming stops both listeners, removes their sockets and
	// ends the connections made to them.
	server.DisconnectIncoming()
	for _, a := range []string{def, other} {
		if _, err := os.Lstat(strings.TrimPrefix(a, "unix:")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket of %s after DisconnectIncoming: %v, want it gone", a, err)
		}
		if !logs.has(`msg="stopped listening; socket file removed"`, "address="+a) {
			t.Errorf("no log line for the removal of %s", a)
		}
	}
	for range 2 {
		select {
		case <-lost:
		case <-time.After(deadline):
			t.Fatal("a client's connection did not end after DisconnectIncoming")
		}
	}
	if _, err := client.ConnectAddress(ctx, dir, "node", "unix"); !errors.Is(err, process.ErrNoListener) {
		t.Errorf("ConnectAddress after DisconnectIncoming: %v, want %v", err, process.ErrNoListener)
	}
}

func TestConnectAddressWithoutListener(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	client := newClientIpc(t)

	init, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if !errors.Is(err, process.ErrNoListener) {
		t.Fatalf("ConnectAddress(unix) = %v, want %v", err, process.ErrNoListener)
	}
	want := "no node is listening at unix:" + filepath.Join(dir, "node.sock") + ": is it running with -ipcbind?"
	if !strings.HasSuffix(err.Error(), want) || init.IsValid() {
		t.Errorf("ConnectAddress(unix) error %q, want it to end with %q", err, want)
	}
	for _, a := range []string{"auto", "0", ""} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil || init.IsValid() {
			t.Errorf("ConnectAddress(%q) = valid %v, %v; want an invalid Init and no error", a, init.IsValid(), err)
		}
	}
	if _, err := client.ConnectAddress(ctx, dir, "node", "unix:@abstract"); !errors.Is(err, process.ErrUnrecognizedAddress) {
		t.Errorf("ConnectAddress(unix:@abstract) = %v, want %v", err, process.ErrUnrecognizedAddress)
	}
	// A stale socket is no listener either, and auto carries on.
	stale := filepath.Join(dir, "node.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := client.ConnectAddress(ctx, dir, "node", "unix"); !errors.Is(err, process.ErrNoListener) {
		t.Errorf("ConnectAddress(unix) on a stale socket = %v, want %v", err, process.ErrNoListener)
	}
	if init, err := client.ConnectAddress(ctx, dir, "node", "auto"); err != nil || init.IsValid() {
		t.Errorf("ConnectAddress(auto) on a stale socket = %v, %v; want an invalid Init and no error", init.IsValid(), err)
	}
}

func TestListenAddressBindErrors(t *testing.T) {
	dir := shortDir(t)
	server, _ := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	second, _ := newListeningIpc(t, ipc.Options{})
	if _, err := second.ListenAddress(dir, "unix"); !errors.Is(err, process.ErrAddressInUse) {
		t.Errorf("second ListenAddress on a live socket = %v, want %v", err, process.ErrAddressInUse)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := second.ListenAddress(dir, "unix:file"); !errors.Is(err, process.ErrNotSocket) {
		t.Errorf("ListenAddress on a regular file = %v, want %v", err, process.ErrNotSocket)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("regular file after the refused bind: %q, %v", b, err)
	}
	if _, err := second.ListenAddress(dir, "tcp:127.0.0.1:1"); !errors.Is(err, process.ErrUnrecognizedAddress) {
		t.Errorf("ListenAddress(tcp:...) = %v, want %v", err, process.ErrUnrecognizedAddress)
	}
	if _, err := second.ListenAddress(dir, "unix:"+strings.Repeat("x", process.MaxPathLen)); !errors.Is(err, process.ErrPathTooLong) {
		t.Errorf("ListenAddress with a long path = %v, want %v", err, process.ErrPathTooLong)
	}
}

// echoAfter calls echoAfter on a new Echo from init.
func echoAfter(ctx context.Context, init schema.Init, msg string, delay time.Duration) (string, error) {
	made, release := init.MakeEcho(ctx, nil)
	defer release()
	fut, release2 := made.Result().EchoAfter(ctx, func(p schema.Echo_echoAfter_Params) error {
		p.SetDelayMs(uint32(delay / time.Millisecond))
		return p.SetEcho(msg)
	})
	defer release2()
	res, err := fut.Struct()
	if err != nil {
		return "", err
	}
	return res.Result()
}

// echoAfter waits, refuses a delay over the limit, gives up when the caller
// cancels, and does not hold up other calls on the same connection.
func TestEchoAfter(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server, logs := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	init, err := newClientIpc(t).ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer init.Release()

	const delay = 100 * time.Millisecond
	start := time.Now()
	if got, err := echoAfter(ctx, init, "later", delay); err != nil || got != "later" {
		t.Fatalf("echoAfter = %q, %v", got, err)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("echoAfter returned after %s, before its delay of %s", elapsed, delay)
	}
	if _, err := echoAfter(ctx, init, "never", ipc.MaxEchoDelay+time.Millisecond); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("echoAfter over the limit = %v, want an error naming the limit", err)
	}

	slowCtx, cancel := context.WithCancel(ctx)
	slow := make(chan error, 1)
	go func() {
		_, err := echoAfter(slowCtx, init, "slow", ipc.MaxEchoDelay)
		slow <- err
	}()
	waitLog(t, logs, `msg="delaying an echo"`, "delay=1m0s")
	if got, err := echo(ctx, init, "meanwhile"); err != nil || got != "meanwhile" {
		t.Fatalf("echo during a slow call on the same connection = %q, %v", got, err)
	}
	select {
	case err := <-slow:
		t.Fatalf("slow call returned early: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-slow:
		if err == nil {
			t.Error("canceled echoAfter succeeded")
		}
	case <-time.After(deadline):
		t.Fatal("canceled echoAfter did not return")
	}
	waitLog(t, logs, `msg="delayed echo canceled"`)
}

func waitLog(t *testing.T, logs *addrLog, parts ...string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !logs.has(parts...) {
		if time.Now().After(end) {
			t.Fatalf("no log line with %q", parts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Options.MessageTimeout reaches the listener's connections: a client that
// sends half a message is dropped, an idle one is not.
func TestListenAddressMessageTimeout(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	const timeout = 100 * time.Millisecond
	server, logs := newListeningIpc(t, ipc.Options{MessageTimeout: timeout})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	idle, err := newClientIpc(t).ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Release()

	nc, err := process.Dial(ctx, filepath.Join(dir, "node.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte{0, 0, 0, 0, 2, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(deadline))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("reading until the node hangs up: %v", err)
	}
	waitLog(t, logs, `msg="connection closed"`, "reason=error", "left a message incomplete")

	time.Sleep(3 * timeout)
	if got, err := echo(ctx, idle, "idle but fine"); err != nil || got != "idle but fine" {
		t.Errorf("echo from an idle client = %q, %v", got, err)
	}
}

// cycles is how many connect/call/disconnect cycles the leak tests run.
const cycles = 1000

// Many connect/call/disconnect cycles, listener and clients in this
// process, leave the goroutine and descriptor counts where they were.
func TestListenAddressCyclesLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 1000 cycles")
	}
	ctx := testCtx(t)
	dir := shortDir(t)
	server, logs := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	client := newClientIpc(t)
	cycle := func(i int) {
		init, err := client.ConnectAddress(ctx, dir, "node", "unix")
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", i, err)
		}
		if _, err := echo(ctx, init, "cycle"); err != nil {
			t.Fatalf("cycle %d: echo: %v", i, err)
		}
		init.Release()
	}
	// Warm up: the first cycles start what the process keeps (the
	// poller, timers, pools).
	for i := range 20 {
		cycle(i)
	}
	settled := func(fds, goroutines int) bool {
		return fdcheck.Count(t) <= fds && runtime.NumGoroutine() <= goroutines
	}
	// The baseline once the warm-up connections are over on both sides:
	// a client closes first, so the server's closing them means both.
	end := time.Now().Add(deadline)
	for logs.count(`msg="connection closed"`) < 20 {
		if time.Now().After(end) {
			t.Fatalf("the server closed %d of the 20 warm-up connections", logs.count(`msg="connection closed"`))
		}
		time.Sleep(5 * time.Millisecond)
	}
	fds, goroutines := fdcheck.Count(t), runtime.NumGoroutine()

	start := time.Now()
	for i := range cycles {
		cycle(i)
	}
	took := time.Since(start)
	end = time.Now().Add(deadline)
	for !settled(fds, goroutines) {
		if time.Now().After(end) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %d cycles: %d descriptors (%d before), %d goroutines (%d before):\n%s",
				cycles, fdcheck.Count(t), fds, runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d cycles in %s; descriptors %d -> %d, goroutines %d -> %d",
		cycles, took.Round(time.Millisecond), fds, fdcheck.Count(t), goroutines, runtime.NumGoroutine())
}

// DisconnectIncoming ends only the connections accepted by ListenAddress:
// a spawned child's and an outgoing connection to another listener go on.
func TestDisconnectIncomingKeepsOutgoing(t *testing.T) {
	ctx := testCtx(t)
	exeDir := childDir(t, "child", "echo")
	otherDir, ownDir := shortDir(t), shortDir(t)
	other, _ := newListeningIpc(t, ipc.Options{})
	if _, err := other.ListenAddress(otherDir, "unix"); err != nil {
		t.Fatal(err)
	}
	own, _ := newListeningIpc(t, ipc.Options{ExecutableDir: exeDir})
	if _, err := own.ListenAddress(ownDir, "unix"); err != nil {
		t.Fatal(err)
	}
	child, err := own.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	defer child.Release()
	outgoing, err := own.ConnectAddress(ctx, otherDir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer outgoing.Release()
	incoming, err := newClientIpc(t).ConnectAddress(ctx, ownDir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer incoming.Release()

	own.DisconnectIncoming()
	if _, err := echo(ctx, incoming, "gone"); err == nil {
		t.Error("incoming connection still served after DisconnectIncoming")
	}
	for name, init := range map[string]schema.Init{"spawned child": child, "outgoing connection": outgoing} {
		if got, err := echo(ctx, init, "still here"); err != nil || got != "still here" {
			t.Errorf("%s after DisconnectIncoming: %q, %v", name, got, err)
		}
	}
}
