package integration

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// startGroup runs a node with its wallet in a process group of its own,
// as a shell's job or a systemd service runs them, and waits until it
// has started. It returns the node and the group's id.
func startGroup(t *testing.T, dataDir string, args ...string) (*proc, int) {
	t.Helper()
	node := start(t, "node", append([]string{"-datadir=" + dataDir, "-ipcbind=unix"}, args...), func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	})
	node.out.waitFor(t, lineRE(`msg="node started"`))
	return node, node.cmd.Process.Pid
}

// checkCleanShutdown checks that the node and its wallet went through the
// ordinary shutdown: the node exited 0, the wallet exited 0 after its
// shutdown events, nothing was logged at WARN or ERROR, nothing was
// restarted, and the socket file is gone.
func checkCleanShutdown(t *testing.T, node *proc, dataDir string) {
	t.Helper()
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	out := node.out.String()
	for _, re := range []*regexp.Regexp{
		lineRE(`msg="lifetime event" process=wallet pid=\d+ kind=shutdownComplete`),
		lineRE(`msg="child process exited" process=node pid=\d+ child=wallet child_pid=\d+ status="exit status 0"`),
		lineRE(`msg="lifetime event" process=node pid=\d+ kind=shutdownComplete`),
	} {
		if !re.MatchString(out) {
			t.Errorf("no line matching %q; output:\n%s", re, out)
		}
	}
	for _, bad := range []string{"level=WARN", "level=ERROR", "restart", "signal"} {
		if strings.Contains(out, bad) {
			t.Errorf("the output mentions %q; output:\n%s", bad, out)
		}
	}
	if n := strings.Count(out, `msg="spawned child process`); n != 1 {
		t.Errorf("%d wallet processes spawned, want 1", n)
	}
	if _, err := os.Lstat(filepath.Join(dataDir, "node.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// SIGTERM or SIGINT to the whole process group (systemd's stop, a
// terminal's Ctrl-C, kill -- -PGID) ends the node and its wallet as a
// SIGTERM to the node alone does: the wallet, which ignores the signal
// while its parent lives, is stopped by the node.
func TestGroupSignalStopsCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dataDir := t.TempDir()
			node, pgid := startGroup(t, dataDir)
			generate(t, dataDir, 3)
			if err := syscall.Kill(-pgid, sig); err != nil {
				t.Fatal(err)
			}
			checkCleanShutdown(t, node, dataDir)
		})
	}
}

// SIGHUP (the terminal went away) stops neither the node nor its wallet,
// as it does not stop bitcoind: the node logs it and serves on, its
// socket in place; SIGTERM then stops both cleanly.
func TestSIGHUPKeepsNodeRunning(t *testing.T) {
	dataDir := t.TempDir()
	node, pgid := startGroup(t, dataDir)
	if err := syscall.Kill(-pgid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, lineRE(`msg="SIGHUP received; the node keeps running \(stop it with SIGINT or SIGTERM\)"`))
	generate(t, dataDir, 2)
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 2 {
		t.Errorf("height after SIGHUP and generate 2 = %d", b.Height)
	}
	if err := syscall.Kill(-pgid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	out := node.out.String()
	if !lineRE(`msg="child process exited" process=node pid=\d+ child=wallet child_pid=\d+ status="exit status 0"`).MatchString(out) {
		t.Errorf("the wallet did not exit 0; output:\n%s", out)
	}
	if strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") || strings.Contains(out, "restart") {
		t.Errorf("SIGHUP led to warnings, errors or a restart; output:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(dataDir, "node.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
