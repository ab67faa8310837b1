package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	walletinit "github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
)

// raceEnabled is set when the tests run with -race, and with them the
// programs they run.
var raceEnabled bool

// binDir holds this test binary under the names node and wallet.
var binDir string

// deadline turns a hang into a failure; it never measures speed.
const deadline = 60 * time.Second

// TestMain runs the tests, or, when this binary was started under the name
// of one of the programs (the names it is linked under in binDir), that
// program: the node (in the role it was spawned in, when it spawned
// itself), or the wallet, spawned by a node or run by hand. Since both
// programs are linked into the test binary, go test's cache key covers
// every source file of theirs, and -race builds them with the race
// detector.
func TestMain(m *testing.M) {
	runHelper()
	switch filepath.Base(os.Args[0]) {
	case nodeinit.ExeName:
		ipc.RunRole(nodeinit.Roles())
		os.Exit(nodeinit.Main(os.Args))
	case walletinit.ExeName:
		os.Exit(walletinit.Main(os.Args))
	}
	os.Exit(runTests(m))
}

// helperEnv, in a process's environment, makes this binary a helper
// process of a test instead: see runHelper.
const helperEnv = "MULTIPROCESS_INTEGRATION_HELPER"

// runHelper runs the helper that helperEnv names, if any, and exits: the
// slowcall client (slowCallHelper) or, started as the wallet, the hostile
// wallet (hostileWallet). It returns when this process is no helper, and
// for a wallet held at start (heldwallet, see holdEnv) once it may start.
// A node started with helperEnv set is the node: the variable is for its
// wallets.
func runHelper() {
	switch os.Getenv(helperEnv) {
	case "heldwallet":
		if filepath.Base(os.Args[0]) == walletinit.ExeName {
			waitWhileHeld()
		}
	case "slowcall":
		os.Exit(slowCallHelper(os.Getenv(helperAddrEnv)))
	case "hostilewallet":
		if filepath.Base(os.Args[0]) != walletinit.ExeName {
			return
		}
		if err := hostileWallet(os.Getenv(hostileCaseEnv), os.Getenv(hostileWhenEnv), os.Getenv(hostileRealEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "hostile wallet:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mpbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{nodeinit.ExeName, walletinit.ExeName} {
		if err := linkSelf(dir, name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	binDir = dir
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

// linkSelf places this test binary in dir under name: a hard link, or a
// copy where dir is on another file system. Not a symbolic link: a
// program finds its siblings next to its executable with symbolic links
// resolved (os.Executable), which would be the test binary's directory.
func linkSelf(dir, name string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the test binary: %w", err)
	}
	to := filepath.Join(dir, name)
	if os.Link(self, to) == nil {
		return nil
	}
	from, err := os.Open(self)
	if err != nil {
		return err
	}
	defer from.Close()
	f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, from); err != nil {
		f.Close()
		return fmt.Errorf("copy the test binary to %s: %w", to, err)
	}
	return f.Close()
}

// output collects what a process writes and lets a test wait for a line.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output has a line matching re and returns the
// submatches of the first such line.
func (o *output) waitFor(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		o.mu.Lock()
		m := re.FindStringSubmatch(o.buf.String())
		changed := o.changed
		o.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("no line matching %q within %s; output:\n%s", re, deadline, o.String())
		}
	}
}

// proc is a real executable started by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *output
	done chan struct{}
	err  error
}

// start runs one of the programs in binDir with args. Its stdout and
// stderr (and its children's, which share them) are collected; the test
// fails if they ever mention a data race. The process is killed at the end
// of the test if still running.
func start(t *testing.T, name string, args []string, setup func(*exec.Cmd)) *proc {
	t.Helper()
	fdcheck.Check(t, deadline)
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	out := newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	// Race-enabled binaries otherwise sleep a second at exit.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if setup != nil {
		setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
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
			t.Errorf("%s reported a data race:\n%s", name, out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(deadline):
		t.Fatalf("%s did not exit within %s; output:\n%s", p.cmd.Path, deadline, p.out.String())
	}
	return p.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// cmdline reads the argv of a running process.
func cmdline(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("read cmdline of %d: %v", pid, err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// gone reports whether pid no longer exists, not even as a zombie.
func gone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err)
}

// waitGone waits until pid has been reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for !gone(pid) {
		select {
		case <-ctx.Done():
			t.Fatalf("process %d still exists (state %s)", pid, procState(pid))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// procState returns the state letter of pid from /proc/PID/stat.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}

var childPidRE = regexp.MustCompile(`msg="spawned child process" .*child=wallet child_pid=(\d+)`)

// walletPids returns the pids of the wallets a node spawned, in order.
func walletPids(out string) []int {
	var pids []int
	for _, m := range childPidRE.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// walletPid waits for the node to report its wallet's pid.
func walletPid(t *testing.T, node *proc) int {
	t.Helper()
	m := node.out.waitFor(t, childPidRE)
	pid, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// inOrder fails unless each pattern matches a line of out, each after the
// previous one's match.
func inOrder(t *testing.T, out string, patterns ...string) {
	t.Helper()
	rest := out
	for _, p := range patterns {
		loc := regexp.MustCompile(p).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("no %q after the previous match; output:\n%s", p, out)
		}
		rest = rest[loc[1]:]
	}
}
