package node

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/ipc"
)

const usage = `Usage: node -datadir=DIR [options]

Runs the node with its wallet in a child process until SIGINT or SIGTERM.
The node keeps a chain of blocks in <datadir>/chain.db and logs each new
block with the wallet's balance after it; the wallet keeps its data in
<datadir>/wallets/<name>.db.

Options:
`

// Roles returns the roles the node binary plays beside the node, for
// ipc.RunRole, the first statement of its main: without a wallet
// executable next to it, the node spawns itself as its wallet, and the
// child starts in that role.
func Roles() map[string]func() int {
	return map[string]func() int{WalletExeName: runWalletRole}
}

// runWalletRole is the node binary spawned as its own wallet.
func runWalletRole() int {
	status, handled := wallet.Spawned(os.Args)
	if !handled {
		fmt.Fprintf(os.Stderr, "node: the %s role runs only as a child of a node\n", WalletExeName)
		return 2
	}
	return status
}

// Main is the node executable's main after ipc.RunRole(Roles()): it reads
// the command line args (args[0] is the program's name), sets up logging
// and signals, runs the node until SIGINT or SIGTERM (or a stop request
// over IPC), and returns the exit status: 0 after a clean shutdown, 1 when
// the node failed, 2 for a usage error.
func Main(args []string) int {
	fs := cli.NewFlagSet(ExeName, usage)
	var (
		cfg   Config
		debug cli.Debug
		binds cli.Strings
	)
	fs.StringVar(&cfg.DataDir, "datadir", "", "data `directory` (created with mode 0700)")
	fs.BoolVar(&cfg.DisableWallet, "disablewallet", false, "run without a wallet process")
	fs.StringVar(&cfg.WalletName, "wallet", "default", "load the wallet `name` (<datadir>/wallets/<name>.db), creating it if it does not exist")
	fs.DurationVar(&cfg.BlockInterval, "blockinterval", 0, "produce a block every `duration`; 0 means only on request")
	fs.StringVar(&cfg.PayTo, "payto", "", "pay block rewards to `address`; empty means a new address of the wallet")
	fs.Var(&binds, "ipcbind", "accept IPC connections on `address` (unix, unix:PATH); may be repeated")
	fs.IntVar(&cfg.IPCMaxConns, "ipcmaxconnections", ipc.DefaultMaxConnections, "serve at most `n` IPC connections at once on each -ipcbind address; further clients wait")
	fs.DurationVar(&cfg.IPCMsgTimeout, "ipcmessagetimeout", ipc.DefaultMessageTimeout, "drop an IPC peer that leaves a message incomplete for `duration`; 0 means never")
	fs.DurationVar(&cfg.IPCWriteTimeout, "ipcwritetimeout", ipc.DefaultWriteTimeout, "drop an IPC peer that takes no byte of what the node writes to it for `duration`; 0 means never")
	fs.DurationVar(&cfg.ShutdownTimeout, "ipcshutdowntimeout", 10*time.Second, "how long the wallet may take to stop before it is killed")
	fs.Var(&debug, "debug", "log more about `category` (ipc)")
	if len(args) == 0 {
		args = []string{ExeName}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "node: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if cfg.BlockInterval < 0 {
		fmt.Fprintf(os.Stderr, "node: -blockinterval=%s: must not be negative\n", cfg.BlockInterval)
		return 2
	}
	if cfg.IPCMaxConns < 1 {
		fmt.Fprintf(os.Stderr, "node: -ipcmaxconnections=%d: must be at least 1\n", cfg.IPCMaxConns)
		return 2
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
	}{{"ipcmessagetimeout", &cfg.IPCMsgTimeout}, {"ipcwritetimeout", &cfg.IPCWriteTimeout}} {
		switch {
		case *d.v < 0:
			fmt.Fprintf(os.Stderr, "node: -%s=%s: must not be negative\n", d.name, *d.v)
			return 2
		case *d.v == 0:
			*d.v = -1 // ipc's "no timeout"; its zero means the default
		}
	}
	cfg.IPCBind = binds
	cfg.DebugIPC = debug.Has("ipc")
	cfg.Logger = cli.NewLogger(os.Stderr, ExeName, cfg.DebugIPC)

	// A closed stdout or stderr pipe is an error on write, never death by
	// SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		cfg.Logger.Error("node failed", "err", err)
		return 1
	}
	return 0
}
