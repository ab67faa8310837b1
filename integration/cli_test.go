package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cliCase is one command line and what it must give: the exit status and
// the first line of standard error (a regular expression anchored at the
// start). A usage error (status 2) is that one line and "Run 'wallet
// -help' for usage."; any other error is one line.
type cliCase struct {
	args   []string
	status int
	first  string
}

// checkCLI runs each case against dataDir and checks its status and
// message, and that no message shows the wire: no schema IDs, no method
// paths, no "remote:" layers.
func checkCLI(t *testing.T, dataDir string, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		r := walletCLI(t, dataDir, c.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.status != c.status || !regexp.MustCompile(`^`+c.first).MatchString(lines[0]) {
			t.Errorf("wallet %q: exit %d, stderr %q; want exit %d and a first line matching %q", c.args, r.status, r.stderr, c.status, c.first)
			continue
		}
		want := 1
		if c.status == 2 {
			want = 2
			if len(lines) < 2 || lines[1] != "Run 'wallet -help' for usage." {
				t.Errorf("wallet %q: the usage error is not followed by the pointer to -help: %q", c.args, r.stderr)
			}
		}
		if len(lines) != want {
			t.Errorf("wallet %q: %d lines on stderr, want %d: %q", c.args, len(lines), want, r.stderr)
		}
		if m := regexp.MustCompile(`@0x|remote:|\.[a-z]+[A-Z]\w*:|Init\.|Loader\.`).FindString(r.stderr); m != "" {
			t.Errorf("wallet %q: the message shows the wire (%q): %q", c.args, m, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("wallet %q: printed %q on stdout with an error", c.args, r.stdout)
		}
	}
}

// Every error of the wallet's command line, by class: command line errors
// exit 2 before anything connects; no node, 3; a wallet that does not
// exist or is not loaded, 4; a node that refuses (no wallet, a wallet
// that exists already), 5. Each is one line in the user's terms with the
// next step to take; -debug=ipc adds the detail; -json prints the error
// as JSON on stdout; options go before or after the command.
func TestWalletCLIErrors(t *testing.T) {
	dataDir := t.TempDir()
	sock := filepath.Join(dataDir, "node.sock")
	usage := []cliCase{
		{[]string{"frobnicate"}, 2, `wallet: unknown command "frobnicate" \(the commands: getbalance, `},
		{[]string{"generate"}, 2, `wallet: generate needs N, the number of blocks$`},
		{[]string{"generate", "zero"}, 2, `wallet: generate: "zero" is not a number of blocks from 1 to 1000$`},
		{[]string{"generate", "1001"}, 2, `wallet: generate: "1001" is not a number of blocks from 1 to 1000$`},
		{[]string{"generate", "1", "2"}, 2, `wallet: generate takes one argument, N, the number of blocks, got 2$`},
		{[]string{"getbalance", "extra"}, 2, `wallet: getbalance takes no argument, got "extra" \(options go before or after the command: -wallet=NAME\)$`},
		{[]string{"loadwallet"}, 2, `wallet: loadwallet needs NAME, the wallet's name$`},
		{[]string{"createwallet", "../x"}, 2, `wallet: createwallet: invalid wallet name "../x": use 1 to 64 letters, digits, '-' or '_'$`},
		{[]string{"-wallet=a b", "getbalance"}, 2, `wallet: -wallet=a b: invalid wallet name`},
		{[]string{"-bogus", "getbalance"}, 2, `wallet: unknown option -bogus$`},
		{[]string{"getbalance", "-bogus"}, 2, `wallet: unknown option -bogus$`},
		{[]string{"-ipcconnect=tcp", "getbalance"}, 2, `wallet: -ipcconnect=tcp: not an address: use unix \(the default socket in the data directory\) or unix:PATH`},
		{[]string{"-ipcconnect=0", "getbalance"}, 2, `wallet: getbalance needs a node, and -ipcconnect=0 says not to connect to one$`},
		{[]string{"-ipcwaittimeout=abc", "getbalance"}, 2, `wallet: -ipcwaittimeout=abc: "abc" is not a duration: give a number with a unit, such as 2s, 500ms or 1m$`},
		{[]string{"-ipcwaittimeout=-1s", "getbalance"}, 2, `wallet: -ipcwaittimeout=-1s: must not be negative \(0 means no limit\)$`},
		{[]string{"-debug=rpc", "getbalance"}, 2, `wallet: -debug=rpc: `},
	}
	noNode := []cliCase{
		{[]string{"getbalance"}, 3, regexp.QuoteMeta(`wallet: getbalance: no node is listening at unix:`+sock+`: start the node with -ipcbind=unix, or wait for it with -ipcwait`) + `$`},
		{[]string{"-ipcwait", "-ipcwaittimeout=200ms", "listwallets"}, 3, regexp.QuoteMeta(`wallet: listwallets: no node answered at unix:`+sock+` within -ipcwaittimeout=200ms`) + `$`},
	}
	checkCLI(t, dataDir, append(usage, noNode...))
	if entries, _ := os.ReadDir(dataDir); len(entries) > 0 {
		t.Errorf("the wallet's errors left files in the data directory: %v", entries)
	}

	// -json: the error on stdout, as JSON, and nothing on stderr; an
	// option after the command counts.
	r := walletCLI(t, dataDir, "getbalance", "-json")
	var v struct {
		Error struct {
			Message string
			Code    string
			Status  int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.status != 3 || r.stderr != "" {
		t.Errorf("getbalance -json without a node: exit %d, stdout %q (%v), stderr %q", r.status, r.stdout, err, r.stderr)
	} else if v.Error.Status != 3 || !strings.HasPrefix(v.Error.Message, "no node is listening at unix:"+sock) {
		t.Errorf("getbalance -json without a node printed %+v", v.Error)
	}

	// A node without a wallet refuses the wallet's commands.
	node := startNode(t, dataDir, "-ipcbind=unix")
	checkCLI(t, dataDir, []cliCase{
		{[]string{"getbalance"}, 5, `wallet: getbalance: the node runs without a wallet \(-disablewallet\): start it without that option$`},
		{[]string{"listwallets"}, 5, `wallet: listwallets: the node runs without a wallet \(-disablewallet\)`},
	})
	stopNode(t, node)

	node = startApp(t, dataDir)
	mustCLI(t, dataDir, "createwallet", "spare")
	checkCLI(t, dataDir, []cliCase{
		{[]string{"-wallet=nope", "getbalance"}, 4, `wallet: getbalance: there is no wallet "nope": create it with 'wallet createwallet nope'$`},
		{[]string{"loadwallet", "nope"}, 4, `wallet: loadwallet: there is no wallet "nope": create it with 'wallet createwallet nope'$`},
		{[]string{"createwallet", "default"}, 5, `wallet: createwallet: wallet "default" exists already: load it with 'wallet loadwallet default'$`},
		{[]string{"createwallet", "spare"}, 5, `wallet: createwallet: wallet "spare" exists already`},
	})
	// -json carries the declared error's code.
	r = walletCLI(t, dataDir, "-json", "-wallet=nope", "getbalance")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.status != 4 || v.Error.Status != 4 || v.Error.Code == "" {
		t.Errorf("-json -wallet=nope getbalance: exit %d, stdout %q (%v)", r.status, r.stdout, err)
	}
	// -debug=ipc keeps the detail: the error in full on a second line.
	r = walletCLI(t, dataDir, "-debug=ipc", "-wallet=nope", "getbalance")
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.status != 4 || len(lines) < 2 || !strings.Contains(r.stderr, "wallet: the error in full: ") || !strings.Contains(r.stderr, "walletdb") {
		t.Errorf("-debug=ipc -wallet=nope getbalance: exit %d, stderr %q; want the error in full too", r.status, r.stderr)
	}
	// An absolute -ipcconnect needs no data directory.
	r = runCLI(t, "wallet", "-ipcconnect=unix:"+sock, "listwallets")
	if r.status != 0 || r.stdout != "default\nspare\n" {
		t.Errorf("wallet -ipcconnect=unix:%s listwallets (no -datadir): exit %d, stdout %q, stderr %q", sock, r.status, r.stdout, r.stderr)
	}
	stopNode(t, node)

	// Restarted, the node's wallet process reloads the wallets that were
	// loaded. Without that record, spare exists but is not loaded: a
	// command on it says how to load it and does not load it.
	if err := os.Remove(filepath.Join(dataDir, "wallets", "loaded")); err != nil {
		t.Fatal(err)
	}
	node = startApp(t, dataDir)
	checkCLI(t, dataDir, []cliCase{
		{[]string{"-wallet=spare", "getbalance"}, 4, `wallet: getbalance: wallet "spare" is not loaded: load it with 'wallet loadwallet spare'$`},
		{[]string{"getnewaddress", "-wallet=spare"}, 4, `wallet: getnewaddress: wallet "spare" is not loaded`},
	})
	if got := mustCLI(t, dataDir, "listwallets"); got != "default\n" {
		t.Errorf("listwallets after commands on an unloaded wallet = %q, want only default", got)
	}
	if got := mustCLI(t, dataDir, "loadwallet", "spare"); got != "wallet spare loaded\n" {
		t.Errorf("loadwallet spare printed %q", got)
	}
	if got := mustCLI(t, dataDir, "-wallet=spare", "getbalance"); !strings.HasPrefix(got, "balance: 0 sat\n") {
		t.Errorf("getbalance of the loaded spare printed %q", got)
	}
	stopNode(t, node)
}

// -h and -help print the usage on stdout and exit 0, -version prints the
// version; a person who types the node's internal wallet arguments is
// told so (exit 2). The node refuses bad and contradictory options
// (exit 2, one line and the pointer to -help) before anything is
// created on disk.
func TestHelpAndNodeUsageErrors(t *testing.T) {
	for _, prog := range []string{"node", "wallet"} {
		for _, flag := range []string{"-h", "-help", "--help"} {
			r := runCLI(t, prog, flag)
			if r.status != 0 || !strings.HasPrefix(r.stdout, "Usage: "+prog+" -datadir=DIR") || r.stderr != "" || !strings.Contains(r.stdout, "\nOptions:\n") {
				t.Errorf("%s %s: exit %d, stdout %.80q, stderr %q; want the usage on stdout and exit 0", prog, flag, r.status, r.stdout, r.stderr)
			}
		}
		r := runCLI(t, prog, "-version")
		if r.status != 0 || !regexp.MustCompile(`^`+prog+` \S+`).MatchString(r.stdout) || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("%s -version: exit %d, stdout %q", prog, r.status, r.stdout)
		}
	}

	dataDir := filepath.Join(t.TempDir(), "data")
	for _, c := range []cliCase{
		{nil, 2, `node: no data directory: give -datadir=DIR$`},
		{[]string{"extra"}, 2, `node: unexpected argument "extra": the node takes options only$`},
		{[]string{"-bogus"}, 2, `node: unknown option -bogus$`},
		{[]string{"-blockinterval=abc"}, 2, `node: -blockinterval=abc: "abc" is not a duration: give a number with a unit, such as 2s, 500ms or 1m$`},
		{[]string{"-blockinterval=-1s"}, 2, `node: -blockinterval=-1s: must not be negative`},
		{[]string{"-payto=garbage"}, 2, `node: -payto: "garbage" is not an address: an address is mp1 followed by 40 lowercase hexadecimal digits`},
		{[]string{"-disablewallet", "-blockinterval=1s"}, 2, `node: -blockinterval with -disablewallet needs -payto=ADDRESS`},
		{[]string{"-ipcshutdowntimeout=0"}, 2, `node: -ipcshutdowntimeout=0s: must be more than 0`},
		{[]string{"-ipcshutdowntimeout=-1s"}, 2, `node: -ipcshutdowntimeout=-1s: must be more than 0`},
		{[]string{"-wallet=a/b"}, 2, `node: -wallet=a/b: invalid wallet name "a/b"`},
		{[]string{"-ipcbind=unix", "-ipcbind=unix:node.sock"}, 2, `node: -ipcbind=unix:node.sock: the same socket as -ipcbind=unix \(\S+/node.sock\): give each address once$`},
		{[]string{"-debug=everything"}, 2, `node: -debug=everything: `},
	} {
		args := c.args
		if args != nil {
			args = append([]string{"-datadir=" + dataDir}, args...)
		}
		r := runCLI(t, "node", args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.status != c.status || !regexp.MustCompile(`^`+c.first).MatchString(lines[0]) || len(lines) != 2 || lines[1] != "Run 'node -help' for usage." {
			t.Errorf("node %q: exit %d, stderr %q; want exit %d, a first line matching %q and the pointer to -help", args, r.status, r.stderr, c.status, c.first)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the node's usage errors created the data directory: %v", err)
	}
}

// cmd/README.md, the command-line reference, shows each program's -help
// as the program prints it.
func TestCLIReferenceIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../cmd/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range []string{"node", "wallet"} {
		r := runCLI(t, prog, "-help")
		if r.status != 0 {
			t.Fatalf("%s -help: exit %d", prog, r.status)
		}
		if !strings.Contains(string(doc), "```\n"+r.stdout+"```\n") {
			t.Errorf("cmd/README.md does not show '%s -help' as it is now:\n%s", prog, r.stdout)
		}
	}
}
