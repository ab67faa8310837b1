package integration

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
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
// acknowledged: the node restarts it, and it has every block it had
// applied, catches up on those it missed (the node went on producing
// blocks without it), and counts none twice; so after a restart of the
// node.
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
	exited := lineRE(`msg="child process exited unexpectedly" .*child=wallet child_pid=` + strconv.Itoa(pid) + ` status="killed by signal 9 \(killed\)"`)
	node.out.waitFor(t, exited)
	waitGone(t, pid)
	// What the wallet had acknowledged when the node saw it die.
	out := node.out.String()
	_, acked, ackedHeight := lastLoggedBlock(t, out[:exited.FindStringIndex(out)[0]])
	if ackedHeight < 30 {
		t.Fatalf("the wallet acknowledged blocks up to %d only, before its kill", ackedHeight)
	}
	// The node keeps producing blocks without its wallet, and restarts
	// it.
	node.out.waitFor(t, lineRE(`msg="block connected" process=node pid=\d+ height=\d+ hash=[0-9a-f]{64}\n`))
	node.out.waitFor(t, lineRE(`msg="child process restarted" process=node .*child=wallet restart=1`))
	check := func(when string) {
		t.Helper()
		b := checkBalanceMatchesChain(t, dataDir)
		if b.Height < ackedHeight || b.Balance < acked {
			t.Fatalf("%s: balance %d at height %d, below the acknowledged %d at %d", when, b.Balance, b.Height, acked, ackedHeight)
		}
	}
	check("after the wallet's restart")
	stopNode(t, node)

	node = startApp(t, dataDir)
	check("after a restart of the node")
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

// A method that the process does not serve fails with the declared error
// (schema.ErrNotServed, an unimplemented exception); those it serves work
// over the same connection.
func TestAppMethodNotServed(t *testing.T) {
	dataDir := t.TempDir()
	node := startApp(t, dataDir)
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)

	_, err := init.MakeWalletLoader(ctx, &schema.WalletSettings{DataDir: dataDir}, nil)
	if !errors.Is(err, schema.ErrNotServed) || !errors.Is(err, mp.ErrUnimplemented) || !strings.Contains(err.Error(), "not served by this process") {
		t.Fatalf("node's makeWalletLoader: %v, want schema.ErrNotServed", err)
	}

	// makeChain is served: the chain answers, and its height is the
	// node's block count.
	ch, err := init.MakeChain(ctx)
	if err != nil {
		t.Fatalf("makeChain: %v", err)
	}
	defer mp.Release(ch)
	height, err := ch.Height(ctx)
	if err != nil {
		t.Fatalf("chain height: %v", err)
	}
	if height != 0 {
		t.Errorf("height of a fresh chain = %d, want 0", height)
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

// The spawned wallet answers the node's methods with the declared error,
// and refuses a makeWalletLoader without a chain or with a relative data
// dir instead of failing later.
func TestAppWalletMethodsNotServed(t *testing.T) {
	i := newSpawner(t)
	ctx := testCtx(t)
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(w)
	if _, err := w.MakeNode(ctx); !errors.Is(err, schema.ErrNotServed) {
		t.Errorf("wallet's makeNode: %v, want schema.ErrNotServed", err)
	}
	if _, err := w.MakeChain(ctx); !errors.Is(err, schema.ErrNotServed) {
		t.Errorf("wallet's makeChain: %v, want schema.ErrNotServed", err)
	}
	if _, err := w.MakeWalletLoader(ctx, &schema.WalletSettings{DataDir: t.TempDir()}, nil); err == nil || !strings.Contains(err.Error(), "no chain given") {
		t.Errorf("makeWalletLoader without a chain: %v, want \"no chain given\"", err)
	}
	if _, err := w.MakeWalletLoader(ctx, &schema.WalletSettings{DataDir: "relative/dir"}, unusedChain{}); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("makeWalletLoader with a relative data dir: %v, want \"not an absolute path\"", err)
	}
	// The wallet still answers.
	if got, err := nodeinit.Echo(ctx, w, "still there"); err != nil || got != "still there" {
		t.Errorf("echo after the refused calls = %q, %v", got, err)
	}
}

// unusedChain is a Chain of the test's, whose every method fails.
type unusedChain struct{ schema.UnimplementedChain }
