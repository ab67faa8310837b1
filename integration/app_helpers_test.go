package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/chain"
)

// reward is what each block pays.
const reward = chain.Reward

// startApp runs a node with its wallet, listening on <dataDir>/node.sock,
// and waits until it has started. It logs at Debug (-debug=ipc): the
// connections of clients on -ipcbind are logged at that level.
func startApp(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	node := start(t, "node", append([]string{"-datadir=" + dataDir, "-ipcbind=unix", "-debug=ipc"}, args...), nil)
	node.out.waitFor(t, lineRE(`msg="node started"`))
	return node
}

// cliResult is what one run of the wallet command-line tool produced.
type cliResult struct {
	stdout, stderr string
	status         int
}

// walletCLI runs `wallet -datadir=dataDir -ipcconnect=unix args...` to
// completion.
func walletCLI(t *testing.T, dataDir string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, "wallet", append([]string{"-datadir=" + dataDir, "-ipcconnect=unix"}, args...)...)
}

// runCLI runs program (node or wallet) with args to completion.
func runCLI(t *testing.T, program string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, program), args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within %s; stderr:\n%s", program, args, deadline, stderr.String())
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %q: %v", program, args, err)
		}
		r.status = ee.ProcessState.Sys().(syscall.WaitStatus).ExitStatus()
	}
	if strings.Contains(r.stderr, "DATA RACE") {
		t.Errorf("%s %q reported a data race:\n%s", program, args, r.stderr)
	}
	return r
}

// mustCLI is walletCLI for a command that must succeed.
func mustCLI(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	r := walletCLI(t, dataDir, args...)
	if r.status != 0 {
		t.Fatalf("wallet %q exited %d; stdout:\n%s\nstderr:\n%s", args, r.status, r.stdout, r.stderr)
	}
	return r.stdout
}

type balanceJSON struct {
	Balance   int64  `json:"balance"`
	Unit      string `json:"unit"`
	Height    uint64 `json:"height"`
	BlockHash string `json:"blockhash"`
}

// getBalance asks the running node's wallet for its balance.
func getBalance(t *testing.T, dataDir string) balanceJSON {
	t.Helper()
	var b balanceJSON
	out := mustCLI(t, dataDir, "-json", "getbalance")
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("getbalance -json printed %q: %v", out, err)
	}
	return b
}

// generate has the running node produce n blocks for its wallet and
// returns their hashes.
func generate(t *testing.T, dataDir string, n int) []string {
	t.Helper()
	var v struct {
		Blocks []string `json:"blocks"`
	}
	out := mustCLI(t, dataDir, "-json", "generate", strconv.Itoa(n))
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("generate -json printed %q: %v", out, err)
	}
	if len(v.Blocks) != n {
		t.Fatalf("generate %d returned %d blocks: %q", n, len(v.Blocks), out)
	}
	return v.Blocks
}

// checkBalanceMatchesChain asserts that every block of the chain paid the
// wallet once: each pays reward to a wallet address, so the balance is
// the height times the reward, no block missed, none counted twice.
func checkBalanceMatchesChain(t *testing.T, dataDir string) balanceJSON {
	t.Helper()
	b := getBalance(t, dataDir)
	if b.Unit != chain.Unit {
		t.Errorf("balance unit = %q, want %q", b.Unit, chain.Unit)
	}
	t.Logf("wallet balance %d %s at height %d", b.Balance, b.Unit, b.Height)
	if want := int64(b.Height) * reward; b.Balance != want {
		t.Fatalf("balance %d at height %d, want %d (height x %d): a block was missed or counted twice", b.Balance, b.Height, want, reward)
	}
	return b
}

var blockLogRE = regexp.MustCompile(`msg="block connected" process=node pid=\d+ height=(\d+) hash=([0-9a-f]{64}) wallet_balance="(\d+) sat" wallet_height=(\d+)`)

// lastLoggedBlock returns the height, and the wallet balance and height,
// of the last block the node logged with the wallet's balance.
func lastLoggedBlock(t *testing.T, out string) (height uint64, balance int64, walletHeight uint64) {
	t.Helper()
	ms := blockLogRE.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		return 0, 0, 0
	}
	m := ms[len(ms)-1]
	height, _ = strconv.ParseUint(m[1], 10, 64)
	balance, _ = strconv.ParseInt(m[3], 10, 64)
	walletHeight, _ = strconv.ParseUint(m[4], 10, 64)
	return height, balance, walletHeight
}
