package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
)

// Blocks produced on request reach the wallet through its blockConnected
// callback: the wallet tool, talking to the wallet through the node,
// sees them in its balance and transactions. The node logs each block
// with the wallet's balance, which it gets by calling the wallet, which
// calls back into the node's chain and waits for the node's
// blockConnected call: node -> wallet -> node -> wallet, without
// deadlock.
func TestAppBlocksReachWalletThroughCallback(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)

	if got := strings.TrimSpace(mustCLI(t, dataDir, "listwallets")); got != "default" {
		t.Errorf("listwallets = %q, want \"default\"", got)
	}
	addr := strings.TrimSpace(mustCLI(t, dataDir, "getnewaddress"))
	if !regexp.MustCompile(`^mp1[0-9a-f]{40}$`).MatchString(addr) {
		t.Errorf("getnewaddress = %q, want mp1 and 40 hex digits", addr)
	}
	if b := getBalance(t, dataDir); b.Balance != 0 || b.Height != 0 {
		t.Errorf("fresh wallet: balance %d at height %d, want 0 at 0", b.Balance, b.Height)
	}

	hashes := generate(t, dataDir, 3)
	b := checkBalanceMatchesChain(t, dataDir)
	if b.Height != 3 || b.BlockHash != hashes[2] {
		t.Errorf("balance as of block %d %s, want 3 %s", b.Height, b.BlockHash, hashes[2])
	}
	out := mustCLI(t, dataDir, "getbalance")
	if !strings.Contains(out, "balance: 150000 sat\n") {
		t.Errorf("getbalance printed %q, want a line \"balance: 150000 sat\"", out)
	}

	var txs []struct {
		Height    uint64 `json:"height"`
		BlockHash string `json:"blockhash"`
		Amount    int64  `json:"amount"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, dataDir, "-json", "listtransactions")), &txs); err != nil {
		t.Fatal(err)
	}
	if len(txs) != 3 {
		t.Fatalf("listtransactions: %d transactions, want 3", len(txs))
	}
	for k, tx := range txs {
		if tx.Height != uint64(k+1) || tx.BlockHash != hashes[k] || tx.Amount != reward {
			t.Errorf("transaction %d = %+v, want %d sat in block %d %s", k, tx, reward, k+1, hashes[k])
		}
	}
	if lines := strings.Split(strings.TrimSpace(mustCLI(t, dataDir, "listtransactions")), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "block 1: received 50000 sat at mp1") {
		t.Errorf("listtransactions printed %q", lines)
	}

	// The node's own log: each block with the wallet's balance right
	// after that block.
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=3 `))
	for _, m := range blockLogRE.FindAllStringSubmatch(node.out.String(), -1) {
		h, _ := strconv.ParseUint(m[1], 10, 64)
		bal, _ := strconv.ParseInt(m[3], 10, 64)
		wh, _ := strconv.ParseUint(m[4], 10, 64)
		if wh != h || bal != int64(h)*reward {
			t.Errorf("node logged block %d with wallet balance %d at wallet height %d", h, bal, wh)
		}
	}
	if strings.Contains(node.out.String(), "wallet_err") {
		t.Errorf("the node failed to get the wallet's balance; output:\n%s", node.out.String())
	}
	stopNode(t, node)
	// The wallet's subsystems started when the node made its loader and
	// stopped in reverse order.
	inOrder(t, node.out.String(),
		`msg="lifetime event" process=wallet .*kind=startup subsystem=walletDatabase`,
		`msg="lifetime event" process=wallet .*kind=startup subsystem=chainNotifications`,
		`msg="wallet loaded" process=wallet`,
		`msg="lifetime event" process=wallet .*kind=shutdown subsystem=chainNotifications`,
		`msg="lifetime event" process=wallet .*kind=shutdown subsystem=walletDatabase`,
		`msg="lifetime event" process=wallet .*kind=shutdown subsystem=ipcParent`,
	)
}

// The chain and the wallet survive restarts of the node after SIGTERM and
// after SIGKILL (the orphaned wallet shuts down by itself), including
// while blocks are produced on -blockinterval: the chain keeps its
// height, and the wallet's balance is exactly one reward per block, none
// missed, none counted twice.
func TestAppRestartsKeepChainAndBalance(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	dataDir := t.TempDir()

	node := startApp(t, dataDir)
	generate(t, dataDir, 3)
	stopNode(t, node)

	node = startApp(t, dataDir)
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 3 {
		t.Fatalf("after SIGTERM and restart: height %d, want 3", b.Height)
	}
	generate(t, dataDir, 2)
	killNode := func(node *proc) {
		t.Helper()
		pid := walletPid(t, node)
		node.signal(t, syscall.SIGKILL)
		if ws := node.wait(t); !ws.Signaled() {
			t.Fatalf("node ended with %v", ws)
		}
		// The wallet sees its socket close and shuts down, closing its
		// database, before the next node may open it.
		if ws := reapOrphan(t, pid); !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("orphaned wallet ended with %v; output:\n%s", ws, node.out.String())
		}
	}
	killNode(node)

	node = startApp(t, dataDir)
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 5 {
		t.Fatalf("after SIGKILL and restart: height %d, want 5", b.Height)
	}
	stopNode(t, node)

	// Blocks on an interval, the node killed in the middle of them.
	node = startApp(t, dataDir, "-blockinterval=20ms")
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=12 `))
	killNode(node)
	node = startApp(t, dataDir)
	b := checkBalanceMatchesChain(t, dataDir)
	if b.Height < 12 {
		t.Fatalf("after SIGKILL during -blockinterval: height %d, want at least 12", b.Height)
	}
	stopNode(t, node)
}

// A wallet killed with SIGKILL while blocks arrive loses nothing it
// acknowledged: after a restart of the node it has every block it had
// applied, catches up on those it missed, and counts none twice.
func TestAppWalletKilledLosesNothing(t *testing.T) {
	dataDir := t.TempDir()
	// Blocks every 2 ms keep blockConnected calls in flight most of the
	// time, so the kill likely lands in the middle of one.
	node := startApp(t, dataDir, "-blockinterval=2ms")
	pid := walletPid(t, node)
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=30 .*wallet_balance`))
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.out.waitFor(t, lineRE(`msg="child process exited" .*child=wallet .*status="killed by signal 9 \(killed\)"`))
	waitGone(t, pid)
	_, acked, ackedHeight := lastLoggedBlock(t, node.out.String())
	if ackedHeight < 30 {
		t.Fatalf("the wallet acknowledged blocks up to %d only, before its kill", ackedHeight)
	}
	// The node keeps producing blocks without its wallet.
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=\d+ hash=[0-9a-f]{64}\n`))
	stopNode(t, node)

	node = startApp(t, dataDir)
	b := checkBalanceMatchesChain(t, dataDir)
	if b.Height < ackedHeight || b.Balance < acked {
		t.Fatalf("after the wallet's SIGKILL: balance %d at height %d, below the acknowledged %d at %d", b.Balance, b.Height, acked, ackedHeight)
	}
	stopNode(t, node)
}

// A second opener of a wallet that the wallet process has open gets a
// clear "in use" error within the lock timeout, not a hang.
func TestAppWalletInUse(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)
	start := time.Now()
	db, err := walletdb.Open(filepath.Join(dataDir, "wallets", "default.db"))
	if err == nil {
		db.Close()
		t.Fatal("opened the wallet database that the wallet process holds")
	}
	if !errors.Is(err, walletdb.ErrInUse) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want walletdb.ErrInUse", err)
	}
	if d := time.Since(start); d > 10*walletdb.OpenTimeout {
		t.Errorf("second open took %s to fail", d)
	}
	stopNode(t, node)
}

// A method that the process does not serve fails with the clear error;
// those it serves work over the same connection.
func TestAppMethodNotServed(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)

	fut, release := init.MakeWalletLoader(ctx, nil)
	_, err := fut.Struct()
	release()
	if !ipc.IsNotServed(err) || !strings.Contains(err.Error(), "not served by this process") {
		t.Fatalf("node's makeWalletLoader: %v, want \"not served by this process\"", err)
	}

	// makeChain is served: the chain answers, and its height is the
	// node's block count.
	made, release := init.MakeChain(ctx, nil)
	defer release()
	hfut, release2 := made.Chain().Height(ctx, nil)
	defer release2()
	res, err := hfut.Struct()
	if err != nil {
		t.Fatalf("chain height: %v", err)
	}
	if res.Height() != 0 {
		t.Errorf("height of a fresh chain = %d, want 0", res.Height())
	}
	if !ipc.IsNotServed(fmt.Errorf("makeNode: %w", ipc.ErrNotServed)) {
		t.Error("IsNotServed does not recognise ipc.ErrNotServed itself")
	}
	stopNode(t, node)
}

// The wallet tool refuses bad commands (exit 2) and reports a missing
// node or a node without a wallet clearly (exit 1).
func TestAppWalletCommandErrors(t *testing.T) {
	dataDir := t.TempDir()
	cases := []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"generate"}, 2, `generate takes 1 argument`},
		{[]string{"generate", "zero"}, 2, `not a positive number`},
		{[]string{"getbalance"}, 1, `no node is listening`},
	}
	for _, c := range cases {
		r := walletCLI(t, dataDir, c.args...)
		if r.status != c.status || !strings.Contains(r.stderr, c.want) {
			t.Errorf("wallet %q: exit %d, stderr %q; want exit %d and %q", c.args, r.status, r.stderr, c.status, c.want)
		}
	}
	node := startNode(t, dataDir, "-ipcbind=unix")
	if r := walletCLI(t, dataDir, "getbalance"); r.status != 1 || !strings.Contains(r.stderr, "runs without a wallet") {
		t.Errorf("getbalance on a node without a wallet: exit %d, stderr %q", r.status, r.stderr)
	}
	stopNode(t, node)
}

// Calls in both directions at once: while the node produces blocks on a
// short interval and delivers each to the wallet (node -> wallet), and
// logs each with the wallet's balance (node -> wallet -> node chain ->
// node -> wallet blockConnected), wallet tools ask for the balance
// through the node (tool -> node -> wallet -> node). Every call
// completes, and each balance is consistent with the height it is for.
func TestAppCallbackChainUnderLoad(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir, "-blockinterval=5ms")
	var last uint64
	for range 8 {
		b := checkBalanceMatchesChain(t, dataDir)
		if b.Height < last {
			t.Fatalf("balance went back from height %d to %d", last, b.Height)
		}
		last = b.Height
	}
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=\d+ .*wallet_balance`))
	if strings.Contains(node.out.String(), "wallet_err") {
		t.Errorf("the node failed to get the wallet's balance; output:\n%s", node.out.String())
	}
	stopNode(t, node)
	h, bal, wh := lastLoggedBlock(t, node.out.String())
	if wh != h || bal != int64(h)*reward {
		t.Errorf("node logged block %d with wallet balance %d at wallet height %d", h, bal, wh)
	}
}

// The spawned wallet answers the node's methods with the clear error, and
// refuses a makeWalletLoader without a chain or with a relative data dir
// instead of failing later.
func TestAppWalletMethodsNotServed(t *testing.T) {
	i := newIpc(t)
	ctx := testCtx(t)
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	nfut, release := w.MakeNode(ctx, nil)
	_, err = nfut.Struct()
	release()
	if !ipc.IsNotServed(err) {
		t.Errorf("wallet's makeNode: %v, want \"not served by this process\"", err)
	}
	cfut, release := w.MakeChain(ctx, nil)
	_, err = cfut.Struct()
	release()
	if !ipc.IsNotServed(err) {
		t.Errorf("wallet's makeChain: %v, want \"not served by this process\"", err)
	}
	lfut, release := w.MakeWalletLoader(ctx, func(p schema.Init_makeWalletLoader_Params) error {
		s, err := p.NewSettings()
		if err != nil {
			return err
		}
		return s.SetDataDir(t.TempDir())
	})
	_, err = lfut.Struct()
	release()
	if err == nil || !strings.Contains(err.Error(), "no chain given") {
		t.Errorf("makeWalletLoader without a chain: %v, want \"no chain given\"", err)
	}
	// The wallet still answers.
	if got, err := nodeinit.Echo(ctx, w, "still there"); err != nil || got != "still there" {
		t.Errorf("echo after the refused calls = %q, %v", got, err)
	}
}
