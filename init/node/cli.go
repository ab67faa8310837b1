package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/process"
)

const usage = `Usage: node -datadir=DIR [options]

Runs the node: a chain of blocks in <datadir>/chain.db, and its wallet in a
process of its own, which keeps its data in <datadir>/wallets/<name>.db.
It runs until SIGINT or SIGTERM, to the node or to its whole process
group, and then stops the wallet and itself cleanly. SIGHUP does not stop
it.

A node that shows something at once:

  node -datadir=DIR -blockinterval=2s -ipcbind=unix

and in another terminal:

  wallet -datadir=DIR getbalance

Exit status: 0 after a clean shutdown; 1 if the node failed; 2 for a
command line error; 65 if a database is damaged (restarting will not
help: see the message).

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
		return cli.ExitUsage
	}
	return status
}

// Main is the node executable's main after ipc.RunRole(Roles()): it reads
// the command line args (args[0] is the program's name), sets up logging
// and signals, runs the node until SIGINT or SIGTERM (or a stop request
// over IPC), and returns the exit status (see the usage text).
func Main(args []string) int {
	cfg, status, ok := parseFlags(args)
	if !ok {
		return status
	}
	// A closed stdout or stderr pipe is an error on write, never death by
	// SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP (the terminal went away) does not stop the node, as it
	// does not stop bitcoind; the node has no log file to reopen.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	defer close(hupDone) // signal.Stop does not close hup
	go func() {
		for {
			select {
			case <-hup:
				cfg.Logger.Info("SIGHUP received; the node keeps running (stop it with SIGINT or SIGTERM)")
			case <-hupDone:
				return
			}
		}
	}()
	if err := Run(ctx, cfg); err != nil {
		if errors.Is(err, chain.ErrDamaged) || errors.Is(err, walletdb.ErrDamaged) {
			cfg.Logger.Error("the node stops: a database is damaged", "err", err)
			return cli.ExitDataDamaged
		}
		cfg.Logger.Error("node failed", "err", err)
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// parseFlags reads and checks the command line before anything is
// created on disk. ok is false when the program is to exit with status
// (after -help, -version, or an error, all printed).
func parseFlags(args []string) (cfg Config, status int, ok bool) {
	fs := cli.NewFlagSet(ExeName, usage, ipc.Build())
	var (
		debug      cli.Debug
		binds      cli.Strings
		maxConns   = ipc.DefaultMaxConnections
		msgTimeout = ipc.DefaultMessageTimeout
		wrTimeout  = ipc.DefaultWriteTimeout
		shutdown   = ipc.DefaultShutdownTimeout
	)
	fs.StringVar(&cfg.DataDir, "datadir", "", "data `directory` (created with mode 0700)")
	fs.BoolVar(&cfg.DisableWallet, "disablewallet", false, "run without a wallet process")
	fs.StringVar(&cfg.WalletName, "wallet", "default", "load the wallet `name` (<datadir>/wallets/<name>.db), creating it if it does not exist")
	fs.Var(cli.Duration{D: &cfg.BlockInterval}, "blockinterval", "produce a block every `duration` (2s, 1m...); 0 means only on request")
	fs.StringVar(&cfg.PayTo, "payto", "", "pay block rewards to `address` (mp1...); empty means a new address of the wallet")
	fs.Var(&binds, "ipcbind", "accept IPC connections on `address`: unix (<datadir>/node.sock), unix:PATH (relative to the data directory unless absolute); may be repeated")
	fs.IntVar(&maxConns, "ipcmaxconnections", maxConns, "serve at most `n` IPC connections at once on each -ipcbind address; further clients wait")
	fs.Var(cli.Duration{D: &msgTimeout}, "ipcmessagetimeout", "drop an IPC peer that leaves a message incomplete for `duration`; 0 means no limit")
	fs.Var(cli.Duration{D: &wrTimeout}, "ipcwritetimeout", "drop an IPC peer that takes no byte of what the node writes to it for `duration`; 0 means no limit")
	fs.Var(cli.Duration{D: &shutdown}, "ipcshutdowntimeout", "the `duration` the wallet may take to stop before it is killed (more than 0)")
	fs.Var(&debug, "debug", "log more about `category` (ipc)")
	if len(args) == 0 {
		args = []string{ExeName}
	}
	fail := func(err error) (Config, int, bool) { return cfg, cli.ExitStatus(err), false }
	if err := fs.Parse(args[1:]); err != nil {
		return fail(err)
	}
	if len(fs.Args()) > 0 {
		return fail(fs.Fail("unexpected argument %q: the node takes options only", fs.Args()[0]))
	}
	if cfg.DataDir == "" {
		return fail(fs.Fail("no data directory: give -datadir=DIR"))
	}
	if err := wallet.CheckName(cfg.WalletName); err != nil {
		return fail(fs.Fail("-wallet=%s: %v", cfg.WalletName, err))
	}
	if cfg.PayTo != "" {
		if err := chain.CheckAddress(cfg.PayTo); err != nil {
			return fail(fs.Fail("-payto: %v", err))
		}
	}
	switch {
	case cfg.BlockInterval < 0:
		return fail(fs.Fail("-blockinterval=%s: must not be negative", cfg.BlockInterval))
	case cfg.BlockInterval > 0 && cfg.DisableWallet && cfg.PayTo == "":
		return fail(fs.Fail("-blockinterval with -disablewallet needs -payto=ADDRESS: without a wallet, the node has no address to pay"))
	case maxConns < 1:
		return fail(fs.Fail("-ipcmaxconnections=%d: must be at least 1", maxConns))
	case shutdown <= 0:
		return fail(fs.Fail("-ipcshutdowntimeout=%s: must be more than 0: a wallet that does not stop must be killed some time", shutdown))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		set  *time.Duration
	}{{"ipcmessagetimeout", msgTimeout, &cfg.IPCMsgTimeout}, {"ipcwritetimeout", wrTimeout, &cfg.IPCWriteTimeout}} {
		switch {
		case d.v < 0:
			return fail(fs.Fail("-%s=%s: must not be negative (0 means no limit)", d.name, d.v))
		case d.v == 0:
			*d.set = -1 // ipc's "no limit"; its zero means the default
		default:
			*d.set = d.v
		}
	}
	paths := make(map[string]string, len(binds))
	for _, addr := range binds {
		path, err := process.ParseAddress(cfg.DataDir, ExeName, addr)
		if err != nil {
			return fail(fs.Fail("-ipcbind=%s: %s", addr, cli.AddressError(err)))
		}
		if first, ok := paths[path]; ok {
			return fail(fs.Fail("-ipcbind=%s: the same socket as -ipcbind=%s (%s): give each address once", addr, first, path))
		}
		paths[path] = addr
	}
	cfg.IPCMaxConns = maxConns
	cfg.ShutdownTimeout = shutdown
	cfg.IPCBind = binds
	cfg.DebugIPC = debug.Has("ipc")
	cfg.Logger = cli.NewLogger(os.Stderr, ExeName, cfg.DebugIPC)
	return cfg, cli.ExitOK, true
}
