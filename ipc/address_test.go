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
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// newListeningIpc returns the Ipc of an executable called "node" that
// serves testapp.Server, logging at Debug into its log (and to t.Log when
// verbose), and closes it at the end of the test.
func newListeningIpc(t *testing.T, opts ipc.Options) *testIpc {
	t.Helper()
	return newTestIpc(t, "node", "", &opts)
}

// newClientIpc returns an Ipc for connecting, closed at the end of the
// test. Its log is silent: the many-cycles test would flood it.
func newClientIpc(t *testing.T) *testIpc {
	t.Helper()
	return newTestIpc(t, "wallet", "", &ipc.Options{Logger: slog.New(slog.DiscardHandler)})
}

func TestListenAddressAndConnectAddress(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server := newListeningIpc(t, ipc.Options{})
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
		if !server.logs.has(`msg="listening for IPC connections"`, "address="+a) {
			t.Errorf("no log line for listening on %s", a)
		}
	}

	client := newClientIpc(t)
	lost := make(chan struct{}, 2)
	for _, a := range []string{"unix", "unix:", other, "auto"} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil || init == nil {
			t.Fatalf("ConnectAddress(%q) = %v, %v", a, init, err)
		}
		if got, err := init.Echo(ctx, "via "+a); err != nil || got != "via "+a {
			t.Errorf("echo via %q = %q, %v", a, got, err)
		}
		if a == def || a == other {
			if err := client.AddCleanup(init, func() { lost <- struct{}{} }); err != nil {
				t.Fatal(err)
			}
			defer mp.Release(init)
		} else {
			mp.Release(init)
		}
	}
	for _, a := range []string{"unix", other} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil {
			t.Fatalf("ConnectAddress(%q): %v", a, err)
		}
		if err := client.AddCleanup(init, func() { lost <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		defer mp.Release(init)
	}

	// DisconnectIncoming stops both listeners, removes their sockets and
	// ends the connections made to them.
	server.DisconnectIncoming()
	for _, a := range []string{def, other} {
		if _, err := os.Lstat(strings.TrimPrefix(a, "unix:")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket of %s after DisconnectIncoming: %v, want it gone", a, err)
		}
		if !server.logs.has(`msg="stopped listening; socket file removed"`, "address="+a) {
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
	want := "ipc: connect: process: nothing is listening at unix:" + filepath.Join(dir, "node.sock")
	if err.Error() != want || init != nil {
		t.Errorf("ConnectAddress(unix) error %q, want %q", err, want)
	}
	for _, a := range []string{"auto", "0", ""} {
		init, err := client.ConnectAddress(ctx, dir, "node", a)
		if err != nil || init != nil {
			t.Errorf("ConnectAddress(%q) = %v, %v; want a nil Init and no error", a, init, err)
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
	if init, err := client.ConnectAddress(ctx, dir, "node", "auto"); err != nil || init != nil {
		t.Errorf("ConnectAddress(auto) on a stale socket = %v, %v; want a nil Init and no error", init, err)
	}
}

func TestListenAddressBindErrors(t *testing.T) {
	dir := shortDir(t)
	server := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	second := newListeningIpc(t, ipc.Options{})
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

// echoAfter waits, refuses a delay over the limit, gives up when the caller
// cancels, and does not hold up other calls on the same connection.
func TestEchoAfter(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	init, err := newClientIpc(t).ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(init)

	const delay = 100 * time.Millisecond
	start := time.Now()
	if got, err := init.EchoAfter(ctx, "later", uint32(delay/time.Millisecond)); err != nil || got != "later" {
		t.Fatalf("echoAfter = %q, %v", got, err)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("echoAfter returned after %s, before its delay of %s", elapsed, delay)
	}
	if _, err := init.EchoAfter(ctx, "never", uint32((testapp.MaxDelay+time.Millisecond)/time.Millisecond)); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("echoAfter over the limit = %v, want an error naming the limit", err)
	}

	slowCtx, cancel := context.WithCancel(ctx)
	slow := make(chan error, 1)
	go func() {
		_, err := init.EchoAfter(slowCtx, "slow", uint32(testapp.MaxDelay/time.Millisecond))
		slow <- err
	}()
	server.logs.wait(t, `msg="delaying an echo"`, "delay=1m0s")
	if got, err := init.Echo(ctx, "meanwhile"); err != nil || got != "meanwhile" {
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
	server.logs.wait(t, `msg="delayed echo canceled"`)
}

// Options.MessageTimeout reaches the listener's connections: a client that
// sends half a message is dropped, an idle one is not.
func TestListenAddressMessageTimeout(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	const timeout = 100 * time.Millisecond
	server := newListeningIpc(t, ipc.Options{MessageTimeout: timeout})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	idle, err := newClientIpc(t).ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(idle)

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
	server.logs.wait(t, `msg="connection closed"`, "reason=error", "left a message incomplete")

	time.Sleep(3 * timeout)
	if got, err := idle.Echo(ctx, "idle but fine"); err != nil || got != "idle but fine" {
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
	server := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	client := newClientIpc(t)
	cycle := func(i int) {
		init, err := client.ConnectAddress(ctx, dir, "node", "unix")
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", i, err)
		}
		if _, err := init.Echo(ctx, "cycle"); err != nil {
			t.Fatalf("cycle %d: echo: %v", i, err)
		}
		mp.Release(init)
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
	for server.logs.count(`msg="connection closed"`) < 20 {
		if time.Now().After(end) {
			t.Fatalf("the server closed %d of the 20 warm-up connections", server.logs.count(`msg="connection closed"`))
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
	otherDir, ownDir := shortDir(t), shortDir(t)
	other := newListeningIpc(t, ipc.Options{})
	if _, err := other.ListenAddress(otherDir, "unix"); err != nil {
		t.Fatal(err)
	}
	own := newTestIpc(t, "node", "echo", nil)
	if _, err := own.ListenAddress(ownDir, "unix"); err != nil {
		t.Fatal(err)
	}
	child, err := own.SpawnProcess(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(child)
	outgoing, err := own.ConnectAddress(ctx, otherDir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(outgoing)
	incoming, err := newClientIpc(t).ConnectAddress(ctx, ownDir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(incoming)

	own.DisconnectIncoming()
	if _, err := incoming.Echo(ctx, "gone"); err == nil {
		t.Error("incoming connection still served after DisconnectIncoming")
	}
	for name, init := range map[string]testapp.Init{"spawned child": child, "outgoing connection": outgoing} {
		if got, err := init.Echo(ctx, "still here"); err != nil || got != "still here" {
			t.Errorf("%s after DisconnectIncoming: %q, %v", name, got, err)
		}
	}
}

// ConnectAddress's handshake: a listener of the same application and
// version is introduced; one of another version is refused, its calls
// fail with an error matching ErrVersionMismatch and ErrDisconnected, and
// it goes on serving others.
func TestConnectAddressHandshake(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server := newListeningIpc(t, ipc.Options{})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	client := newTestIpc(t, "wallet", "", nil)
	init, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(init)
	info, err := client.Handshake(ctx, init)
	if err != nil || info.Executable != "node" || info.Pid != int32(os.Getpid()) || info.ApplicationVersion != testVersion {
		t.Fatalf("Handshake = %+v, %v", info, err)
	}

	newer := newTestIpc(t, "wallet", "", &ipc.Options{Application: testApp, ApplicationVersion: testVersion + 1})
	refused, err := newer.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(refused)
	if _, err := newer.Handshake(ctx, refused); !errors.Is(err, ipc.ErrVersionMismatch) {
		t.Errorf("Handshake with a listener of another version: %v; want ErrVersionMismatch", err)
	}
	if _, err := refused.Echo(ctx, "refused"); !errors.Is(err, ipc.ErrVersionMismatch) || !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo on a refused listener: %v; want ErrVersionMismatch and ErrDisconnected", err)
	}
	if got, err := init.Echo(ctx, "still served"); err != nil || got != "still served" {
		t.Errorf("echo from the first client = %q, %v", got, err)
	}
}

// A listener without a control channel (a bare Init served with package
// protocol, as a C++ or Python program would) is usable: calls work,
// Handshake says ErrNoControl, and neither side logs an error for it.
func TestConnectAddressPeerWithoutControl(t *testing.T) {
	fdcheck.Check(t, deadline)
	ctx := testCtx(t)
	dir := shortDir(t)
	path := filepath.Join(dir, "node.sock")
	l, err := process.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bareLogs logBuf
	bareLog := slog.New(slog.NewTextHandler(&bareLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	lctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- protocol.Listen(lctx, l, func(*protocol.Conn) capnp.Client {
			return testapp.InitInterface.Capnp(&testapp.Server{Log: bareLog})
		}, &protocol.Options{Logger: bareLog})
	}()
	defer func() {
		stop()
		if err := <-served; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen = %v", err)
		}
	}()

	client := newTestIpc(t, "wallet", "", nil)
	init, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := init.Echo(ctx, "bare"); err != nil || got != "bare" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if info, err := client.Handshake(ctx, init); !errors.Is(err, ipc.ErrNoControl) || info != nil {
		t.Errorf("Handshake with a bare listener = %v, %v; want ErrNoControl", info, err)
	}
	if got, err := init.EchoAfter(ctx, "later", 1); err != nil || got != "later" {
		t.Errorf("echoAfter = %q, %v", got, err)
	}
	closed := make(chan struct{})
	if err := client.AddCleanup(init, func() { close(closed) }); err != nil {
		t.Fatal(err)
	}
	mp.Release(init)
	select {
	case <-closed:
	case <-time.After(deadline):
		t.Fatal("the connection did not end after release")
	}
	bareLogs.wait(t, `msg="connection closed"`)
	for name, logs := range map[string]*logBuf{"client": client.logs, "bare listener": &bareLogs} {
		if errs := logs.Lines("level=ERROR"); len(errs) > 0 {
			t.Errorf("errors logged by the %s:\n%s", name, strings.Join(errs, "\n"))
		}
	}
	if !client.logs.has("connected to a peer without a control channel") {
		t.Errorf("no log line for the missing control channel:\n%s", client.logs.String())
	}
}

// Serve serves the Init, with the control channel, on a connection this
// process was given; it returns nil once the peer closes it, and
// ctx.Err() when ctx ends.
func TestServe(t *testing.T) {
	ctx := testCtx(t)
	server := newListeningIpc(t, ipc.Options{})
	for _, byPeer := range []bool{true, false} {
		a, b := socketPair(t)
		sctx, cancel := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- server.Serve(sctx, b) }()
		conn, boot, err := protocol.Connect(ctx, a, nil)
		if err != nil {
			t.Fatal(err)
		}
		init := testapp.InitInterface.FromCapnp(boot)
		if got, err := init.Echo(ctx, "served"); err != nil || got != "served" {
			t.Errorf("echo = %q, %v", got, err)
		}
		ctrl := control.ControlInterface.FromCapnp(conn.Bootstrap(ctx))
		if info, err := ctrl.Hello(ctx, &control.PeerInfo{Application: testApp, ApplicationVersion: testVersion, Executable: "peer"}); err != nil || info.Executable != "node" {
			t.Errorf("Hello = %+v, %v", info, err)
		}
		_, err = ctrl.Hello(ctx, &control.PeerInfo{Application: testApp, ApplicationVersion: testVersion + 1, Executable: "peer"})
		if !errors.Is(err, ipc.ErrVersionMismatch) {
			t.Errorf("Hello of another version = %v; want ErrVersionMismatch", err)
		}
		mp.Release(ctrl)
		mp.Release(init)
		want := error(nil)
		if byPeer {
			conn.Close()
		} else {
			cancel()
			want = context.Canceled
		}
		select {
		case err := <-served:
			if !errors.Is(err, want) {
				t.Errorf("Serve = %v; want %v", err, want)
			}
		case <-time.After(deadline):
			t.Fatal("Serve did not return")
		}
		cancel()
		conn.Close()
		<-conn.Done()
	}
}

// socketPair returns the two ends of a unix stream socketpair.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conv(fds[0]), conv(fds[1])
}
