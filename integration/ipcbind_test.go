package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// The test binary doubles as a client process that a test can kill in the
// middle of a call: with helperEnv=slowcall (see runHelper) it connects to
// the node at helperAddrEnv, says "calling", calls echoAfter with the
// longest delay and waits.
const helperAddrEnv = "MULTIPROCESS_INTEGRATION_HELPER_ADDR"

func slowCallHelper(addr string) int {
	i := ipc.New("helper", os.Args[0], schema.InitInterface, nodeinit.NewInit, nil)
	defer i.Close()
	ctx := context.Background()
	init, err := i.ConnectAddress(ctx, "", nodeinit.ExeName, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer mp.Release(init)
	e, err := init.MakeEcho(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer mp.Release(e)
	fmt.Println("calling")
	_, err = e.EchoAfter(ctx, "never", uint32(appinit.MaxEchoDelay/time.Millisecond))
	fmt.Println("call returned:", err)
	return 1
}

// startHelper runs the test binary as the slowcall helper against addr;
// the process is killed and reaped at the end of the test.
func startHelper(t *testing.T, addr string) *proc {
	t.Helper()
	return startPath(t, os.Args[0], []string{"-test.run=^$"}, helperEnv+"=slowcall", helperAddrEnv+"="+addr)
}

// startPath is start for an executable anywhere, with env added to this
// process's environment.
func startPath(t *testing.T, path string, args []string, env ...string) *proc {
	t.Helper()
	fdcheck.Check(t, deadline)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	out := newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if strings.Contains(out.String(), "DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", path, out.String())
		}
	})
	return p
}

// socketDir returns a new directory with a short path, outside any data
// directory, for absolute socket paths.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func lineRE(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// startNode runs a node without a wallet and waits until it has started.
// It logs at Debug (-debug=ipc): the connections of clients on -ipcbind
// are logged at that level.
func startNode(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	node := start(t, "node", append([]string{"-datadir=" + dataDir, "-disablewallet", "-debug=ipc"}, args...), nil)
	node.out.waitFor(t, lineRE(`msg="node started"`))
	return node
}

// stopNode sends SIGTERM and expects exit status 0.
func stopNode(t *testing.T, node *proc) {
	t.Helper()
	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// connectNode connects the test's Ipc to the node at address and checks
// that an echo comes back. The proxy is released at the end of the test.
func connectNode(t *testing.T, i *ipc.Ipc[schema.Init], dataDir, address string) schema.Init {
	t.Helper()
	ctx := testCtx(t)
	init, err := i.ConnectAddress(ctx, dataDir, nodeinit.ExeName, address)
	if err != nil {
		t.Fatalf("connect to %s: %v", address, err)
	}
	t.Cleanup(func() { mp.Release(init) })
	if got, err := nodeinit.Echo(ctx, init, "via "+address); err != nil || got != "via "+address {
		t.Fatalf("echo via %s = %q, %v", address, got, err)
	}
	return init
}

// echoAfter calls echoAfter on a new Echo from init.
func echoAfter(ctx context.Context, init schema.Init, msg string, delay time.Duration) (string, error) {
	e, err := init.MakeEcho(ctx)
	if err != nil {
		return "", err
	}
	defer mp.Release(e)
	return e.EchoAfter(ctx, msg, uint32(delay/time.Millisecond))
}

func checkSocket(t *testing.T, path string) {
	t.Helper()
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|0o600 {
		t.Errorf("%s: %v, %v; want a socket with mode 0600", path, fi.Mode(), err)
	}
}

// -ipcbind given twice: the node listens on both addresses at once and
// serves clients on each, the real wallet among them.
func TestIPCBindTwoListeners(t *testing.T) {
	dataDir := t.TempDir()
	other := filepath.Join(socketDir(t), "other.sock")
	node := startNode(t, dataDir, "-ipcbind=unix", "-ipcbind=unix:"+other)
	def := filepath.Join(dataDir, "node.sock")
	for _, path := range []string{def, other} {
		node.out.waitFor(t, lineRE(`msg="listening for IPC connections" .*address=unix:`+regexp.QuoteMeta(path)+`\n`))
		checkSocket(t, path)
	}

	i := newIpc(t)
	a := connectNode(t, i, dataDir, "unix")
	b := connectNode(t, i, dataDir, "unix:"+other)
	ctx := testCtx(t)
	for n, init := range []schema.Init{a, b, a} {
		if got, err := nodeinit.Echo(ctx, init, strconv.Itoa(n)); err != nil || got != strconv.Itoa(n) {
			t.Errorf("echo %d = %q, %v", n, got, err)
		}
	}
	wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix:" + other}, nil)
	wallet.out.waitFor(t, lineRE(`msg="node answered" .*echo="hello from wallet"`))
	stopNode(t, node)
}

// On SIGTERM the node stops accepting, ends its incoming connections (the
// real wallet's and an in-process client's), removes its socket files,
// logs each step in that order for each listener, and exits 0. The
// wallet, whose connection the node ended, exits 0.
func TestIPCBindShutdownRemovesSocket(t *testing.T) {
	dataDir := t.TempDir()
	other := filepath.Join(socketDir(t), "other.sock")
	node := startNode(t, dataDir, "-ipcbind=unix", "-ipcbind=unix:"+other)
	def := filepath.Join(dataDir, "node.sock")

	wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix"}, nil)
	wallet.out.waitFor(t, lineRE(`msg="node answered"`))
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix:"+other)
	lost := make(chan struct{})
	if err := i.AddCleanup(init, func() { close(lost) }); err != nil {
		t.Fatal(err)
	}

	stopNode(t, node)
	for _, path := range []string{def, other} {
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s after the node exited: %v, want it removed", path, err)
		}
	}
	out := node.out.String()
	for _, path := range []string{def, other} {
		q := regexp.QuoteMeta(path)
		steps := []*regexp.Regexp{
			lineRE(`msg="stopped accepting connections" .*listener=` + q + ` open=1`),
			lineRE(`msg="connection closed" .*reason="ctx ended"`),
			lineRE(`msg="ended incoming connections" .*listener=` + q + ` count=1`),
			lineRE(`msg="stopped listening; socket file removed" .*address=unix:` + q + `\n`),
		}
		at := strings.Index(out, `msg="shutting down"`)
		if at < 0 {
			t.Fatalf("no shutdown line; output:\n%s", out)
		}
		for _, step := range steps {
			loc := step.FindStringIndex(out[at:])
			if loc == nil {
				t.Fatalf("no line matching %q after the previous step; output:\n%s", step, out)
			}
			at += loc[1]
		}
	}

	if ws := wallet.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("wallet ended with %v; output:\n%s", ws, wallet.out.String())
	}
	wallet.out.waitFor(t, lineRE(`msg="the node closed the connection; exiting"`))
	select {
	case <-lost:
	case <-time.After(deadline):
		t.Fatal("the in-process client's connection did not end")
	}
}

// The node serves 16 connections at once by default. A 17th client, the
// real wallet, is not refused: it waits, and is served as soon as one of
// the 16 leaves.
func TestIPCMaxConnections(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix")
	i := newIpc(t)
	var clients []schema.Init
	for range ipc.DefaultMaxConnections {
		clients = append(clients, connectNode(t, i, dataDir, "unix"))
	}
	node.out.waitFor(t, lineRE(`level=WARN msg="connection limit reached; further clients wait until one closes" .*max_connections=16`))

	wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix"}, nil)
	wallet.out.waitFor(t, lineRE(`msg="connecting to the node"`))
	time.Sleep(time.Second)
	if strings.Contains(wallet.out.String(), "node answered") {
		t.Fatalf("17th client served while 16 were connected; output:\n%s", wallet.out.String())
	}
	select {
	case <-wallet.done:
		t.Fatalf("17th client gave up or was refused; output:\n%s", wallet.out.String())
	default:
	}
	if n := strings.Count(node.out.String(), `msg="connection opened"`); n != 16 {
		t.Fatalf("node opened %d connections, want 16", n)
	}

	mp.Release(clients[0])
	wallet.out.waitFor(t, lineRE(`msg="node answered" .*echo="hello from wallet"`))
	ctx := testCtx(t)
	for n, c := range clients[1:] {
		if _, err := nodeinit.Echo(ctx, c, "still connected"); err != nil {
			t.Errorf("client %d after the 17th came in: %v", n+1, err)
		}
	}
	stopNode(t, node)
}

// One client blocked in a slow call does not hold up the others: a second
// in-process client's echo and the real wallet's complete meanwhile.
func TestIPCSlowCallDoesNotBlockOthers(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix", "-debug=ipc")
	i := newIpc(t)
	slowClient := connectNode(t, i, dataDir, "unix")
	other := connectNode(t, i, dataDir, "unix")

	ctx, cancel := context.WithCancel(testCtx(t))
	slow := make(chan error, 1)
	go func() {
		_, err := echoAfter(ctx, slowClient, "slow", appinit.MaxEchoDelay)
		slow <- err
	}()
	node.out.waitFor(t, lineRE(`msg="delaying an echo" .*delay=1m0s`))

	for n := range 3 {
		if got, err := nodeinit.Echo(testCtx(t), other, "quick"); err != nil || got != "quick" {
			t.Fatalf("echo %d during the slow call = %q, %v", n, got, err)
		}
	}
	wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix"}, nil)
	wallet.out.waitFor(t, lineRE(`msg="node answered"`))
	select {
	case err := <-slow:
		t.Fatalf("slow call returned early: %v", err)
	default:
	}

	cancel()
	select {
	case err := <-slow:
		if err == nil {
			t.Error("canceled slow call succeeded")
		}
	case <-time.After(deadline):
		t.Fatal("canceled slow call did not return")
	}
	node.out.waitFor(t, lineRE(`msg="delayed echo canceled"`))
	stopNode(t, node)
}

// A client process killed with SIGKILL in the middle of a call: the node
// cancels the call, closes that connection and goes on serving others.
func TestIPCClientKilledMidCall(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix", "-debug=ipc")
	helper := startHelper(t, "unix:"+filepath.Join(dataDir, "node.sock"))
	helper.out.waitFor(t, lineRE(`calling`))
	node.out.waitFor(t, lineRE(`msg="delaying an echo"`))

	helper.signal(t, syscall.SIGKILL)
	if ws := helper.wait(t); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v; output:\n%s", ws, helper.out.String())
	}
	node.out.waitFor(t, lineRE(`msg="delayed echo canceled"`))
	node.out.waitFor(t, lineRE(`msg="connection closed" .*reason="peer closed"`))

	i := newIpc(t)
	connectNode(t, i, dataDir, "unix")
	wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix"}, nil)
	wallet.out.waitFor(t, lineRE(`msg="node answered"`))
	stopNode(t, node)
}

// openFDCount counts the descriptors of pid.
func openFDCount(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list descriptors of %d: %v", pid, err)
	}
	return len(entries)
}

// vmRSS reads the resident set size of pid, in KiB.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	return procStatusKiB(t, pid, "VmRSS")
}

// plainNode returns a node executable built without the race detector:
// under -race, ThreadSanitizer's own bookkeeping grows the resident memory
// of a process by some KiB for every thousand goroutines it ever ran (the
// Go heap stays flat), which would hide what the test looks for. Without
// -race that is the test binary; with it, cmd/node built for the test. Its
// packages are linked into the test binary as well, so go test's cache key
// covers them; reading cmd/node's own source adds that to the key.
func plainNode(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return filepath.Join(binDir, "node")
	}
	if _, err := os.ReadFile("../cmd/node/main.go"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/gomultiprocess/multiprocess/cmd/node")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build node without -race: %v\n%s", err, out)
	}
	return filepath.Join(dir, "node")
}

// rssMarginKiB is how much the node's resident memory may grow over the
// cycles: the garbage collector and the allocator's caches decide the last
// MiB or two. A leaked connection costs far more than a KiB (a goroutine's
// stack alone is 8 KiB), so a leak shows as several MiB per 1000 cycles.
const rssMarginKiB = 2 << 10

// 1000 connect/call/disconnect cycles leave the node's descriptor count
// where it was and its resident memory within a small margin of it. The
// in-process version, which also counts goroutines, is in package ipc.
func TestIPCConnectCyclesKeepNodeSteady(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 1000 cycles")
	}
	const cycles, warmUp = 1000, 300
	dataDir := t.TempDir()
	// GOGC=25 keeps the heap within a quarter of what is live, so that
	// resident memory follows what the node keeps rather than when its
	// collector last ran.
	node := startPath(t, plainNode(t), []string{"-datadir=" + dataDir, "-disablewallet", "-ipcbind=unix", "-debug=ipc"}, "GOGC=25")
	node.out.waitFor(t, lineRE(`msg="node started"`))
	pid := node.cmd.Process.Pid
	i := newIpc(t)
	ctx := testCtx(t)
	cycle := func(n int) {
		init, err := i.ConnectAddress(ctx, dataDir, nodeinit.ExeName, "unix")
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", n, err)
		}
		if _, err := nodeinit.Echo(ctx, init, "cycle"); err != nil {
			t.Fatalf("cycle %d: echo: %v", n, err)
		}
		mp.Release(init)
	}
	// Warm up, so that what the node keeps for good (pools, caches,
	// the runtime's free lists) is in the baseline.
	for n := range warmUp {
		cycle(n)
	}
	waitFDs := func(want int) int {
		end := time.Now().Add(deadline)
		for {
			n := openFDCount(t, pid)
			if n <= want || time.Now().After(end) {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The baseline once the node has closed every warm-up connection.
	waitClosed := func(n int) {
		end := time.Now().Add(deadline)
		for strings.Count(node.out.String(), `msg="connection closed"`) < n {
			if time.Now().After(end) {
				t.Fatalf("the node closed %d of %d connections", strings.Count(node.out.String(), `msg="connection closed"`), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitClosed(warmUp)
	fds0, rss0 := openFDCount(t, pid), vmRSS(t, pid)

	start := time.Now()
	for n := range cycles {
		cycle(n)
	}
	took := time.Since(start)
	waitClosed(warmUp + cycles)
	fds1 := waitFDs(fds0)
	rss1 := vmRSS(t, pid)
	t.Logf("%d cycles in %s; node descriptors %d -> %d; VmRSS %d KiB -> %d KiB (%+d KiB)",
		cycles, took.Round(time.Millisecond), fds0, fds1, rss0, rss1, rss1-rss0)
	if fds1 != fds0 {
		t.Errorf("node holds %d descriptors after %d cycles, %d before", fds1, cycles, fds0)
	}
	if rss1-rss0 > rssMarginKiB {
		t.Errorf("node's VmRSS grew by %d KiB over %d cycles (from %d KiB), more than %d KiB", rss1-rss0, cycles, rss0, rssMarginKiB)
	}
	if n := strings.Count(node.out.String(), `msg="connection closed"`); n < cycles+warmUp {
		t.Errorf("node closed %d connections, want %d", n, cycles+warmUp)
	}
	stopNode(t, node)
}

// A second node on another data directory but the same absolute socket
// path is refused while the first is alive: it exits 1 naming the
// address, and the first node's socket is untouched and still serves.
func TestIPCBindSecondNodeRefused(t *testing.T) {
	sock := filepath.Join(socketDir(t), "shared.sock")
	first := startNode(t, t.TempDir(), "-ipcbind=unix:"+sock)
	before, ok := idOf(t, sock)
	if !ok {
		t.Fatalf("no socket at %s", sock)
	}

	second := start(t, "node", []string{"-datadir=" + t.TempDir(), "-disablewallet", "-ipcbind=unix:" + sock}, nil)
	if ws := second.wait(t); !ws.Exited() || ws.ExitStatus() != 1 {
		t.Fatalf("second node ended with %v; output:\n%s", ws, second.out.String())
	}
	second.out.waitFor(t, lineRE(`level=ERROR msg="node failed" .*address in use: a process accepts connections at unix:`+regexp.QuoteMeta(sock)))
	if strings.Contains(second.out.String(), "node started") {
		t.Errorf("second node started; output:\n%s", second.out.String())
	}
	if after, ok := idOf(t, sock); !ok || after != before {
		t.Errorf("first node's socket replaced or removed")
	}
	connectNode(t, newIpc(t), "", "unix:"+sock)
	select {
	case <-first.done:
		t.Fatalf("first node exited; output:\n%s", first.out.String())
	default:
	}
	stopNode(t, first)
}

// Any failure to bind stops start-up with a message naming the address
// and exit status 1, after undoing the binds that succeeded; an address
// that cannot be one, a bad -ipcmaxconnections or timeout is a usage
// error, found before anything is created on disk.
func TestIPCBindFailureStopsStartup(t *testing.T) {
	dir := socketDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := "unix:/" + strings.Repeat("x", 120)
	cases := []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"regular file", []string{"-ipcbind=unix:" + file}, 1, `-ipcbind=unix:` + file + `: .*not a socket: ` + file + ` is a regular file`},
		{"second of two", []string{"-ipcbind=unix", "-ipcbind=unix:" + file}, 1, `not a socket`},
		{"unrecognized", []string{"-ipcbind=tcp:127.0.0.1:1"}, 2, `(?m)^node: -ipcbind=tcp:127.0.0.1:1: not an address: use unix .* or unix:PATH`},
		{"abstract", []string{"-ipcbind=unix:@node"}, 2, `(?m)^node: -ipcbind=unix:@node: not an address`},
		{"too long", []string{"-ipcbind=" + long}, 2, `(?m)^node: -ipcbind=unix:/x+: the socket path is too long for a unix socket \(at most 107 bytes\)`},
		{"zero connections", []string{"-ipcbind=unix", "-ipcmaxconnections=0"}, 2, `-ipcmaxconnections=0: must be at least 1`},
		{"negative message timeout", []string{"-ipcbind=unix", "-ipcmessagetimeout=-1s"}, 2, `-ipcmessagetimeout=-1s: must not be negative`},
		{"negative write timeout", []string{"-ipcbind=unix", "-ipcwritetimeout=-5ms"}, 2, `-ipcwritetimeout=-5ms: must not be negative`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			node := start(t, "node", append([]string{"-datadir=" + dataDir, "-disablewallet"}, c.args...), nil)
			if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != c.status {
				t.Fatalf("node ended with %v, want exit status %d; output:\n%s", ws, c.status, node.out.String())
			}
			node.out.waitFor(t, lineRE(c.want))
			if strings.Contains(node.out.String(), "node started") {
				t.Errorf("node started; output:\n%s", node.out.String())
			}
			if _, err := os.Lstat(filepath.Join(dataDir, "node.sock")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket left in the data directory: %v", err)
			}
			if entries, _ := os.ReadDir(dataDir); c.status == 2 && len(entries) > 0 {
				t.Errorf("a usage error left files in the data directory: %v", entries)
			}
		})
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious" {
		t.Errorf("regular file after the refused binds: %q, %v", b, err)
	}
}

// wallet -ipcconnect, run by hand: unix fails clearly without a node; auto
// carries on without one and connects to one; 0 never connects.
func TestWalletIPCConnect(t *testing.T) {
	t.Run("unix without a node", func(t *testing.T) {
		dataDir := t.TempDir()
		wallet := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=unix"}, nil)
		if ws := wallet.wait(t); !ws.Exited() || ws.ExitStatus() != 3 {
			t.Fatalf("wallet ended with %v; output:\n%s", ws, wallet.out.String())
		}
		wallet.out.waitFor(t, lineRE(regexp.QuoteMeta(`msg="cannot connect to the node: no node is listening at unix:`+filepath.Join(dataDir, "node.sock")+`: start the node with -ipcbind=unix, or wait for it with -ipcwait"`)))
	})
	for _, c := range []struct{ connect, want string }{
		{"auto", `msg="no node is listening; running without one \(-ipcconnect=auto\)"`},
		{"0", `msg="running without a node \(-ipcconnect=0\)"`},
	} {
		t.Run(c.connect+" without a node", func(t *testing.T) {
			wallet := start(t, "wallet", []string{"-datadir=" + t.TempDir(), "-ipcconnect=" + c.connect}, nil)
			wallet.out.waitFor(t, lineRE(c.want))
			wallet.signal(t, syscall.SIGTERM)
			if ws := wallet.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
				t.Fatalf("wallet ended with %v; output:\n%s", ws, wallet.out.String())
			}
		})
	}
	t.Run("auto and 0 with a node", func(t *testing.T) {
		dataDir := t.TempDir()
		node := startNode(t, dataDir, "-ipcbind=unix")
		auto := start(t, "wallet", []string{"-datadir=" + dataDir}, nil) // auto is the default
		auto.out.waitFor(t, lineRE(`msg="node answered" .*echo="hello from wallet"`))
		off := start(t, "wallet", []string{"-datadir=" + dataDir, "-ipcconnect=0"}, nil)
		off.out.waitFor(t, lineRE(`msg="running without a node`))
		for _, w := range []*proc{auto, off} {
			w.signal(t, syscall.SIGINT)
			if ws := w.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
				t.Fatalf("wallet ended with %v; output:\n%s", ws, w.out.String())
			}
		}
		node.out.waitFor(t, lineRE(`msg="connection closed" .*reason="peer closed"`))
		if n := strings.Count(node.out.String(), `msg="connection opened"`); n != 1 {
			t.Errorf("node saw %d connections, want 1 (the auto wallet's)", n)
		}
		stopNode(t, node)
	})
	t.Run("no data directory", func(t *testing.T) {
		wallet := start(t, "wallet", []string{"-ipcconnect=unix"}, nil)
		if ws := wallet.wait(t); !ws.Exited() || ws.ExitStatus() != 2 {
			t.Fatalf("wallet ended with %v; output:\n%s", ws, wallet.out.String())
		}
		wallet.out.waitFor(t, lineRE(`wallet: no data directory: give -datadir=DIR`))
	})
}

// foreignClient connects to the socket named by its argument and reports
// what one read gives: "read 0" means the node closed the connection. It
// is perl, which Debian always has (perl-base is essential).
const foreignClient = `
use IO::Socket::UNIX;
$| = 1;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!\n";
print "connected\n";
my $n = sysread($s, my $buf, 1);
print defined($n) ? "read $n\n" : "read error: $!\n";
`

// The real node refuses and logs a client of another uid and goes on
// serving its own. Needs root to start the client as nobody; CI runs as
// root.
func TestIPCBindRefusesForeignUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("starting a client with another uid needs root; CI runs this as root")
	}
	dir, err := os.MkdirTemp("/tmp", "mp") // every directory above is searchable
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "node.sock")
	node := startNode(t, t.TempDir(), "-ipcbind=unix:"+sock)
	checkSocket(t, sock)
	// Mode 0600 alone keeps nobody out; open it so that the peer
	// credentials check is what refuses.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(testCtx(t), "/usr/bin/perl", "-e", foreignClient, sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("foreign client: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	if out := stdout.String(); out != "connected\nread 0\n" && !strings.HasPrefix(out, "connected\nread error:") {
		t.Errorf("foreign client's connection was not closed: %q", out)
	}
	node.out.waitFor(t, lineRE(`level=WARN msg="refused a connection" .*address=unix:`+regexp.QuoteMeta(sock)+` peer_pid=\d+ peer_uid=65534 .*foreign uid`))
	if strings.Contains(node.out.String(), `msg="connection opened"`) {
		t.Errorf("node served the foreign client; output:\n%s", node.out.String())
	}
	connectNode(t, newIpc(t), "", "unix:"+sock)
	stopNode(t, node)
}
