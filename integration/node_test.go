package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type fileID struct{ dev, ino uint64 }

func idOf(t *testing.T, path string) (fileID, bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, false // the descriptor closed meanwhile
	}
	return fileID{st.Dev, st.Ino}, true
}

// openFileIDs lists the identities of every descriptor pid holds.
func openFileIDs(t *testing.T, pid int) map[fileID]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list descriptors of %d: %v", pid, err)
	}
	ids := make(map[fileID]string)
	for _, e := range entries {
		if id, ok := idOf(t, filepath.Join(dir, e.Name())); ok {
			ids[id] = e.Name()
		}
	}
	return ids
}

// The node spawns its wallet as `<dir>/wallet -ipcfd 3`, calls it, and
// passes it none of the descriptors the node itself inherited; it receives
// the wallet's lifetime events (logged with -debug=ipc). On SIGTERM both
// exit 0 and the wallet is reaped.
func TestNodeSpawnsWalletAndStopsOnSIGTERM(t *testing.T) {
	dataDir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	regular, err := os.Create(filepath.Join(t.TempDir(), "inherited"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	inherited := []*os.File{r, w, regular}

	node := start(t, "node", []string{"-datadir=" + dataDir, "-debug=ipc"}, func(c *exec.Cmd) {
		c.ExtraFiles = inherited
	})
	pid := walletPid(t, node)
	node.out.waitFor(t, regexp.MustCompile(`msg="wallet loaded" process=node `))

	if got, want := cmdline(t, pid), []string{filepath.Join(binDir, "wallet"), "-ipcfd", "3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("wallet argv = %q, want %q", got, want)
	}
	walletFDs := openFileIDs(t, pid)
	for _, f := range inherited {
		id, _ := idOf(t, fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if fd, ok := walletFDs[id]; ok {
			t.Errorf("wallet holds the node's inherited %s as fd %s", f.Name(), fd)
		}
	}
	// The node itself did inherit them (fds 3-5), so the check above is
	// looking at the right identities.
	nodeFDs := openFileIDs(t, node.cmd.Process.Pid)
	for _, f := range inherited {
		id, _ := idOf(t, fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if _, ok := nodeFDs[id]; !ok {
			t.Errorf("node does not hold inherited %s; the check proves nothing", f.Name())
		}
	}

	// The wallet's start-up, replayed to the node when it subscribed.
	node.out.waitFor(t, regexp.MustCompile(`msg="child lifetime event" .*kind=startupComplete`))
	inOrder(t, node.out.String(),
		`msg="child lifetime event" .*child=wallet .*kind=startup subsystem="" seq=1`,
		`msg="child lifetime event" .*child=wallet .*kind=startup subsystem=ipcParent seq=2`,
		`msg="child lifetime event" .*child=wallet .*kind=startupComplete subsystem="" seq=3`,
	)

	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	// The wallet's shutdown events reach the node before the wallet exits.
	inOrder(t, node.out.String(),
		`msg="shutting down" process=node`,
		`msg="child lifetime event" .*child=wallet .*kind=shutdown subsystem=ipcParent`,
		`msg="child process exited" .*child=wallet child_pid=\d+ status="exit status 0"`,
	)
	waitGone(t, pid)
}

// A wallet that does not shut down when asked (SIGSTOP) is killed after
// -ipcshutdowntimeout and reaped; the node still exits 0.
func TestStoppedWalletIsKilledAfterTimeout(t *testing.T) {
	node := start(t, "node", []string{"-datadir=" + t.TempDir(), "-ipcshutdowntimeout=1s"}, nil)
	pid := walletPid(t, node)
	node.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	inOrder(t, node.out.String(),
		`msg="child did not shut down in time; killing it"`,
		`msg="child process exited" .*child=wallet .*status="killed by signal 9 \(killed\)"`,
	)
	waitGone(t, pid)
}

// SIGKILL of the node: the wallet sees its socket close, runs its
// shutdown on its own (its events go to its log) and exits 0, every time.
// The test becomes a subreaper so that the orphaned wallet is reparented
// to it and its status can be read.
func TestWalletExitsWhenNodeIsKilled(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	for round := range 20 {
		node := start(t, "node", []string{"-datadir=" + t.TempDir()}, nil)
		pid := walletPid(t, node)
		node.out.waitFor(t, regexp.MustCompile(`msg="wallet loaded" process=node `))
		node.signal(t, syscall.SIGKILL)
		if ws := node.wait(t); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: node ended with %v", round, ws)
		}
		if ws := reapOrphan(t, pid); !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("round %d: orphaned wallet ended with %v; output:\n%s", round, ws, node.out.String())
		}
		inOrder(t, node.out.String(),
			`msg="parent closed the connection; shutting down" process=wallet`,
			`msg="lifetime event" process=wallet .*kind=shutdown subsystem=ipcParent`,
			`msg="lifetime event" process=wallet .*kind=shutdownComplete subsystem=""`,
			`msg="shut down; exiting" process=wallet`,
		)
	}
}

// reapOrphan waits for pid, which must have been reparented to this
// process (a subreaper), and returns its status.
func reapOrphan(t *testing.T, pid int) unix.WaitStatus {
	t.Helper()
	type result struct {
		ws  unix.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		done <- result{ws, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("reap %d: %v", pid, r.err)
		}
		return r.ws
	case <-time.After(deadline):
		_ = unix.Kill(pid, unix.SIGKILL)
		<-done
		t.Fatalf("orphan %d did not exit within %s", pid, deadline)
	}
	panic("unreachable")
}

// SIGKILL of the wallet: the node logs the death once, at ERROR, with the
// signal, reaps the child, and restarts it, which loads the wallet again;
// the node keeps running until told to stop, and then stops the new
// wallet cleanly.
func TestNodeRestartsKilledWallet(t *testing.T) {
	node := start(t, "node", []string{"-datadir=" + t.TempDir()}, nil)
	pid := walletPid(t, node)
	node.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, regexp.MustCompile(`msg="child process restarted" process=node .*child=wallet restart=1`))
	waitGone(t, pid)
	pids := walletPids(node.out.String())
	if len(pids) != 2 || pids[0] != pid {
		t.Fatalf("wallets spawned: %v, want %d and its replacement", pids, pid)
	}
	node.out.waitFor(t, regexp.MustCompile(`msg="wallet loaded" process=wallet pid=`+strconv.Itoa(pids[1])+` wallet=default`))
	select {
	case <-node.done:
		t.Fatalf("node exited after its wallet was killed; output:\n%s", node.out.String())
	default:
	}
	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	out := node.out.String()
	errLines := regexp.MustCompile(`(?m)^.*level=ERROR.*$`).FindAllString(out, -1)
	want := regexp.MustCompile(`level=ERROR msg="child process exited unexpectedly" process=node pid=\d+ child=wallet child_pid=` + strconv.Itoa(pid) + ` status="killed by signal 9 \(killed\)"$`)
	if len(errLines) != 1 || !want.MatchString(errLines[0]) {
		t.Errorf("ERROR lines: %q; want one, matching %q", errLines, want)
	}
	inOrder(t, out, `msg="child process exited" process=node .*child_pid=`+strconv.Itoa(pids[1])+` status="exit status 0"`)
	waitGone(t, pids[1])
}

// A second node on the same data directory is refused.
func TestDataDirInUse(t *testing.T) {
	dataDir := t.TempDir()
	first := start(t, "node", []string{"-datadir=" + dataDir, "-disablewallet"}, nil)
	first.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	second := start(t, "node", []string{"-datadir=" + dataDir, "-disablewallet"}, nil)
	if ws := second.wait(t); !ws.Exited() || ws.ExitStatus() != 1 {
		t.Fatalf("second node ended with %v; output:\n%s", ws, second.out.String())
	}
	second.out.waitFor(t, regexp.MustCompile(`data directory in use`))
	select {
	case <-first.done:
		t.Fatalf("first node exited; output:\n%s", first.out.String())
	default:
	}
}

// The data directory is created with mode 0700.
func TestDataDirCreatedPrivate(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "new")
	node := start(t, "node", []string{"-datadir=" + dataDir, "-disablewallet"}, nil)
	node.out.waitFor(t, regexp.MustCompile(`msg="node started"`))
	st, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o700 {
		t.Errorf("data directory mode = %o, want 700", perm)
	}
	node.signal(t, syscall.SIGINT)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
}
