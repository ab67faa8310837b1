package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	walletinit "github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// holdEnv names a file: a wallet started with helperEnv=heldwallet (see
// runHelper) waits, before it does anything, until the file is gone, so
// that a test can keep a restarting wallet from coming up for as long as
// it needs.
const holdEnv = "MULTIPROCESS_INTEGRATION_HOLD"

// waitWhileHeld waits until the file named by holdEnv is gone.
func waitWhileHeld() {
	for {
		if _, err := os.Stat(os.Getenv(holdEnv)); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SIGKILL of the wallet, then calls through the node while the node
// restarts it and after. While it is down, the wallet tool fails clearly
// and the node's walletLoader fails with the declared "restarting" error,
// which is not the "no wallet" error of a node run with -disablewallet.
// The node goes on producing blocks meanwhile. Once the wallet is back, it
// has reloaded the wallets it had loaded, and its balance is one reward
// for every block, those produced while it was down included: nothing
// missed, nothing counted twice.
func TestWalletRestartCalls(t *testing.T) {
	dataDir := t.TempDir()
	hold := filepath.Join(t.TempDir(), "hold")
	node := startPath(t, filepath.Join(binDir, "node"), []string{"-datadir=" + dataDir, "-ipcbind=unix"},
		helperEnv+"=heldwallet", holdEnv+"="+hold)
	node.out.waitFor(t, lineRE(`msg="node started"`))
	payTo := node.out.waitFor(t, lineRE(`msg="wallet loaded" process=node pid=\d+ payto=(\S+)`))[1]
	pid := walletPid(t, node)

	generate(t, dataDir, 3)
	if r := walletCLI(t, dataDir, "-wallet=second", "getbalance"); r.status != 4 || !strings.Contains(r.stderr, `there is no wallet "second": create it with 'wallet createwallet second'`) {
		t.Errorf("getbalance of a wallet that does not exist: exit %d, stderr %q", r.status, r.stderr)
	}
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)
	n, err := init.MakeNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(n)
	loader, err := n.WalletLoader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := loader.CreateWallet(ctx, "second")
	if err != nil {
		t.Fatalf("createWallet: %v", err)
	}
	mp.Release(second)
	if _, err := loader.LoadWallet(ctx, "nosuch"); !errors.Is(err, walletdb.ErrNotExist) {
		t.Errorf("loadWallet of a wallet that does not exist: %v, want walletdb.ErrNotExist", err)
	}
	mp.Release(loader)

	// The next wallet the node starts waits until the test lets it.
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, lineRE(`level=ERROR msg="child process exited unexpectedly" process=node .*child=wallet child_pid=`+strconv.Itoa(pid)+` status="killed by signal 9 \(killed\)"`))
	waitGone(t, pid)
	node.out.waitFor(t, lineRE(`msg="spawned child process" process=node .*child=wallet child_pid=\d+`+"(?s:.*)"+`msg="spawned child process" process=node`))

	// During the restart.
	_, err = n.WalletLoader(ctx)
	if !errors.Is(err, ipc.ErrChildRestarting) || errors.Is(err, schema.ErrNoWallet) {
		t.Errorf("walletLoader while the wallet restarts: %v; want ipc.ErrChildRestarting", err)
	}
	t.Logf("walletLoader while the wallet restarts: %v", err)
	for _, args := range [][]string{{"getbalance"}, {"listwallets"}, {"generate", "1"}} {
		r := walletCLI(t, dataDir, args...)
		if r.status != 5 || !strings.HasPrefix(r.stderr, "wallet: "+args[0]+": the wallet process exited (killed by signal 9) at ") || !strings.Contains(r.stderr, "; restarting") {
			t.Errorf("wallet %q while the wallet restarts: exit %d, stderr %q; want exit 5 saying it is restarting", args, r.status, r.stderr)
		}
		t.Logf("wallet %q while the wallet restarts: %s", args, strings.TrimSpace(r.stderr))
	}
	// The node carries on without its wallet: blocks paying the
	// wallet's address, which it will see once it is back.
	if _, err := n.GenerateBlocks(ctx, 2, payTo); err != nil {
		t.Fatalf("generateBlocks while the wallet restarts: %v", err)
	}
	if h, err := n.BlockCount(ctx); err != nil || h != 5 {
		t.Fatalf("blockCount while the wallet restarts = %d, %v; want 5", h, err)
	}

	// After the restart.
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, lineRE(`msg="child process restarted" process=node .*child=wallet restart=1`))
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 5 {
		t.Fatalf("after the restart: balance at height %d, want 5", b.Height)
	}
	if got := strings.Fields(mustCLI(t, dataDir, "listwallets")); fmt.Sprint(got) != "[default second]" {
		t.Errorf("listwallets after the restart = %q, want the wallets loaded before: default, second", got)
	}
	if lines := strings.Split(strings.TrimSpace(mustCLI(t, dataDir, "listtransactions")), "\n"); len(lines) != 5 {
		t.Errorf("listtransactions after the restart: %d transactions, want 5:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	generate(t, dataDir, 1)
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 6 {
		t.Fatalf("after the restart and another block: balance at height %d, want 6", b.Height)
	}
	loader, err = n.WalletLoader(ctx)
	if err != nil {
		t.Fatalf("walletLoader after the restart: %v", err)
	}
	mp.Release(loader)
	stopNode(t, node)

	// A node without a wallet says so, with another declared error.
	node = startNode(t, dataDir, "-ipcbind=unix")
	init = connectNode(t, newIpc(t), dataDir, "unix")
	n2, err := init.MakeNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(n2)
	_, err = n2.WalletLoader(ctx)
	if !errors.Is(err, schema.ErrNoWallet) || errors.Is(err, ipc.ErrChildRestarting) {
		t.Errorf("walletLoader with -disablewallet: %v; want schema.ErrNoWallet", err)
	}
	if r := walletCLI(t, dataDir, "getbalance"); r.status != 5 || !strings.Contains(r.stderr, "runs without a wallet") || strings.Contains(r.stderr, "restarting") {
		t.Errorf("getbalance with -disablewallet: exit %d, stderr %q", r.status, r.stderr)
	}
	stopNode(t, node)
}

var selfSpawnRE = regexp.MustCompile(`msg="spawned child process: this binary in another role" process=node .*child=wallet child_pid=(\d+) path=(\S+) role=wallet`)

// A node with no wallet executable next to it spawns itself as its
// wallet (`<node> -ipcfd 3`, in the wallet role), which serves as the
// wallet does, is restarted the same way when killed, and stops with the
// node.
func TestNodeSpawnsItselfAsWallet(t *testing.T) {
	dir := t.TempDir()
	if err := linkSelf(dir, "node"); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "node")
	dataDir := t.TempDir()
	node := startPath(t, exe, []string{"-datadir=" + dataDir, "-ipcbind=unix"})
	node.out.waitFor(t, lineRE(`msg="node started"`))
	m := node.out.waitFor(t, selfSpawnRE)
	pid, _ := strconv.Atoi(m[1])
	if m[2] != exe {
		t.Errorf("the node spawned %s, want itself, %s", m[2], exe)
	}
	if got, want := cmdline(t, pid), []string{exe, "-ipcfd", "3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("wallet argv = %q, want %q", got, want)
	}
	node.out.waitFor(t, lineRE(`msg="wallet loaded" process=`+walletinit.ExeName+` pid=`+strconv.Itoa(pid)+` wallet=default`))
	generate(t, dataDir, 2)
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 2 {
		t.Fatalf("balance at height %d, want 2", b.Height)
	}

	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, lineRE(`msg="child process restarted" process=node .*child=wallet restart=1`))
	waitGone(t, pid)
	ms := selfSpawnRE.FindAllStringSubmatch(node.out.String(), -1)
	if len(ms) != 2 {
		t.Fatalf("the node spawned %d wallets, want 2; output:\n%s", len(ms), node.out.String())
	}
	pid, _ = strconv.Atoi(ms[1][1])
	if got, want := cmdline(t, pid), []string{exe, "-ipcfd", "3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("restarted wallet argv = %q, want %q", got, want)
	}
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 2 {
		t.Fatalf("after the restart: balance at height %d, want 2", b.Height)
	}

	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	inOrder(t, node.out.String(), `msg="child process exited" process=node .*child_pid=`+strconv.Itoa(pid)+` status="exit status 0"`)
	waitGone(t, pid)
}

// A wallet that keeps crashing is restarted until the policy gives up (5
// restarts within a minute): then the node says so at ERROR, runs on
// without it, and the wallet's commands say that it gave up, which is
// neither "restarting" nor -disablewallet's "no wallet".
func TestWalletRestartsExhausted(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)
	for crash := 1; crash <= 6; crash++ {
		pids := walletPids(node.out.String())
		if len(pids) != crash {
			t.Fatalf("crash %d: %d wallets spawned so far, want %d; output:\n%s", crash, len(pids), crash, node.out.String())
		}
		pid := pids[len(pids)-1]
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		if crash <= 5 {
			node.out.waitFor(t, lineRE(`msg="child process restarted" process=node .*child=wallet restart=`+strconv.Itoa(crash)+`\b`))
		}
	}
	node.out.waitFor(t, lineRE(`level=ERROR msg="child process will not be restarted" process=node .*child=wallet .*reason="gave up after 5 restarts"`))

	r := walletCLI(t, dataDir, "getbalance")
	if r.status != 5 || !strings.HasPrefix(r.stderr, "wallet: getbalance: the wallet process exited (killed by signal 9) at ") || !strings.Contains(r.stderr, "; gave up after 5 restarts") || strings.Contains(r.stderr, "restarting") || strings.Contains(r.stderr, "without a wallet") {
		t.Errorf("getbalance after the restarts gave out: exit %d, stderr %q", r.status, r.stderr)
	}
	// The node serves on.
	if r := walletCLI(t, dataDir, "stop"); r.status != 0 || r.stdout != "the node is stopping\n" {
		t.Errorf("stop: exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
	}
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
	if n := len(walletPids(node.out.String())); n != 6 {
		t.Errorf("%d wallets spawned, want 6", n)
	}
}
