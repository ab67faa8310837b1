package integration

import (
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile"
	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile/bolttest"
	"github.com/gomultiprocess/multiprocess/mp"
)

// damageWallet zeroes a page of the wallet database at path, as a
// failing disk or another program would, through a descriptor of its
// own: the last leaf of its payouts when they have leaves of their own,
// else the root bucket's leaf. It works on a file that a wallet process
// has open too.
func damageWallet(t *testing.T, path string) {
	t.Helper()
	l, err := boltfile.Inspect(path)
	if err != nil {
		t.Fatalf("inspect %s: %v", path, err)
	}
	f := &bolttest.File{T: t, Path: path, Layout: l}
	var last uint64
	for _, p := range l.Pages {
		if p.Bucket == "txs" && !p.Branch {
			last = p.ID
		}
	}
	if last == 0 {
		last = f.Page("", false, 0)
	}
	f.Zero(last)
}

// A wallet database damaged while the node is stopped: the node starts,
// its wallet process leaves the damaged wallet out (logged, naming the
// file), loading it says that it is damaged (exit 65), and the node and
// its other wallets serve on. The node's own wallet damaged: the node
// stops at start-up with status 65 and says which file, without
// restarting the wallet process in a loop.
func TestDamagedWalletFile(t *testing.T) {
	dataDir := t.TempDir()
	spare := filepath.Join(dataDir, "wallets", "spare.db")
	own := filepath.Join(dataDir, "wallets", "default.db")

	node := startApp(t, dataDir)
	generate(t, dataDir, 150)
	mustCLI(t, dataDir, "createwallet", "spare")
	checkBalanceMatchesChain(t, dataDir)
	stopNode(t, node)

	damageWallet(t, spare)
	node = startApp(t, dataDir)
	node.out.waitFor(t, lineRE(`level=WARN msg="cannot load a wallet that was loaded before" process=wallet pid=\d+ wallet=spare err=".*`+regexp.QuoteMeta(spare)+`.*damaged`))
	r := walletCLI(t, dataDir, "loadwallet", "spare")
	if r.status != 65 || !strings.HasPrefix(r.stderr, "wallet: loadwallet: ") || !strings.Contains(r.stderr, spare) || !strings.Contains(r.stderr, "damaged") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("loadwallet of a damaged wallet: exit %d, stderr %q; want 65 and one line naming %s as damaged", r.status, r.stderr, spare)
	}
	if got := mustCLI(t, dataDir, "listwallets"); got != "default\n" {
		t.Errorf("listwallets = %q, want only default", got)
	}
	if b := checkBalanceMatchesChain(t, dataDir); b.Height != 150 {
		t.Errorf("height %d after the restart, want 150", b.Height)
	}
	stopNode(t, node)
	if out := node.out.String(); strings.Contains(out, "restart") || strings.Contains(out, "level=ERROR") {
		t.Errorf("a damaged wallet that is not loaded led to a restart or an error; output:\n%s", out)
	}

	damageWallet(t, own)
	node = start(t, "node", []string{"-datadir=" + dataDir, "-ipcbind=unix"}, nil)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 65 {
		t.Fatalf("node with its wallet damaged ended with %v, want exit 65; output:\n%s", ws, node.out.String())
	}
	out := node.out.String()
	if !lineRE(`level=ERROR msg="the node stops: a database is damaged" process=node pid=\d+ err=".*` + regexp.QuoteMeta(own)).MatchString(out) {
		t.Errorf("the node did not say which database is damaged; output:\n%s", out)
	}
	if n := strings.Count(out, `msg="spawned child process`); n != 1 {
		t.Errorf("%d wallet processes spawned, want 1; output:\n%s", n, out)
	}
}

// A wallet database damaged under the running wallet process (a failing
// disk): the next block the wallet applies finds it; the wallet process
// exits with status 65, which supervision never restarts; the node says
// why it runs on without its wallet, and the CLI says so too (exit 5)
// while the node serves on.
func TestDamagedWalletWhileRunning(t *testing.T) {
	dataDir := t.TempDir()
	own := filepath.Join(dataDir, "wallets", "default.db")
	node := startApp(t, dataDir)
	addr := strings.TrimSpace(mustCLI(t, dataDir, "getnewaddress"))
	generate(t, dataDir, 150)
	checkBalanceMatchesChain(t, dataDir)

	damageWallet(t, own)
	// The node pays the address without asking the wallet for one.
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)
	n, err := init.MakeNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(n)
	if _, err := n.GenerateBlocks(ctx, 1, addr); err != nil {
		t.Fatalf("generateBlocks after the damage: %v", err)
	}
	node.out.waitFor(t, lineRE(`level=ERROR msg="the wallet process stops: a wallet's data is damaged" process=wallet pid=\d+ .*err=".*`+regexp.QuoteMeta(own)))
	node.out.waitFor(t, lineRE(`level=ERROR msg="child process exited unexpectedly" process=node pid=\d+ child=wallet child_pid=\d+ status="exit status 65"`))
	node.out.waitFor(t, lineRE(`its data is damaged`))

	r := walletCLI(t, dataDir, "getbalance")
	if r.status != 5 || !strings.HasPrefix(r.stderr, "wallet: getbalance: ") || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("getbalance after the wallet stopped for damage: exit %d, stderr %q; want 5 and the reason", r.status, r.stderr)
	}
	// The node serves on: its chain grows.
	if _, err := n.GenerateBlocks(ctx, 2, addr); err != nil {
		t.Fatalf("generateBlocks with the wallet down: %v", err)
	}
	if h, err := n.BlockCount(ctx); err != nil || h != 153 {
		t.Errorf("blockCount = %d, %v; want 153", h, err)
	}
	if spawned := strings.Count(node.out.String(), `msg="spawned child process`); spawned != 1 {
		t.Errorf("%d wallet processes spawned, want 1: the damaged wallet was restarted; output:\n%s", spawned, node.out.String())
	}
	node.signal(t, syscall.SIGTERM)
	if ws := node.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("node ended with %v; output:\n%s", ws, node.out.String())
	}
}
