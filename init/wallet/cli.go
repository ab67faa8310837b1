package wallet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/schema"
)

// nodeExeName is the node executable's name (package node's ExeName,
// which imports this package): -ipcconnect=unix connects to
// <datadir>/node.sock.
const nodeExeName = "node"

const usage = `Usage: wallet -datadir=DIR [options] COMMAND [ARGUMENTS]

Asks a node started with -ipcbind (and the wallet process the node runs)
and prints the answer: one line per fact, or JSON with -json.

Commands:

  getbalance           the wallet's balance, once it has caught up with the chain
  getnewaddress        a new receiving address of the wallet
  listtransactions     what the wallet received, oldest first
  listwallets          the wallets the node's wallet process has loaded
  loadwallet NAME      loads the existing wallet NAME
  createwallet NAME    creates the wallet NAME and loads it
  generate N           has the node produce N blocks paying a new address of the wallet
  stop                 asks the node to shut down

The wallet commands act on -wallet (default "default"), which must be
loaded: the node loads its own wallet, and 'loadwallet NAME' loads others.
Without a command, the wallet connects to the node, checks that it
answers, and waits until SIGINT or until the node goes away.

Exit status: 0 on success; 1 if a call failed; 2 for a command line
error; 3 if no node answers; 4 if the wallet does not exist or is not
loaded; 5 if the node refuses for now (it runs without a wallet, its
wallet is restarting, it is shutting down); 65 if a wallet's data is
damaged. With -json, an error is printed on standard output as
{"error": {"message": ..., "code": ..., "status": ...}}.

Options:
`

// Main is the wallet executable's main: args is its command line (args[0]
// is the program's name). Spawned by a node (-ipcfd), it serves the wallet
// process on the inherited socket (see Spawned); run by hand, it is the
// user's tool, which connects to a node started with -ipcbind and, with a
// command, prints the answer. It returns the exit status.
func Main(args []string) int {
	if len(args) == 0 {
		args = []string{ExeName}
	}
	for _, a := range args[1:] {
		if a == "-ipcfd" || strings.HasPrefix(a, "-ipcfd=") {
			return runSpawned(args)
		}
	}
	return runByHand(args)
}

// runSpawned is the wallet started by a node. A person who types
// `wallet -ipcfd 3` is told that it is not for them.
func runSpawned(args []string) int {
	if fd, spawned, err := process.CheckSpawned(args); err != nil || !spawned || !isSocket(fd) {
		fmt.Fprintf(os.Stderr, "wallet: -ipcfd is how a node starts its wallet process, not an option for people:\n"+
			"start a node instead (node -datadir=DIR), or see 'wallet -help' for the wallet's commands.\n")
		return cli.ExitUsage
	}
	status, _ := Spawned(args)
	return status
}

// isSocket reports whether descriptor fd is a socket.
func isSocket(fd int) bool {
	var st syscall.Stat_t
	return syscall.Fstat(fd, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFSOCK
}

// options is what the by-hand wallet's command line sets.
type options struct {
	dataDir, connect, wallet string
	json, wait               bool
	waitTimeout              time.Duration
	debug                    cli.Debug
}

// runByHand is the wallet started by a user: it connects to a running node
// as -ipcconnect says.
func runByHand(args []string) int {
	fs := cli.NewFlagSet(ExeName, usage, ipc.Build())
	var o options
	fs.StringVar(&o.dataDir, "datadir", "", "the node's data `directory`, where -ipcconnect=unix finds <datadir>/node.sock")
	fs.StringVar(&o.connect, "ipcconnect", "auto", "connect to the node at `address`: unix (<datadir>/node.sock) or unix:PATH (relative to -datadir unless absolute); auto, as unix but without a command it runs without a node if none listens; 0, not to connect")
	fs.BoolVar(&o.wait, "ipcwait", false, "wait for the node to listen and answer, for scripts that start a node and call it at once")
	fs.Var(cli.Duration{D: &o.waitTimeout}, "ipcwaittimeout", "with -ipcwait, give up after `duration`; 0 means no limit")
	fs.Var(&o.debug, "debug", "log more about `category` (ipc), and print errors in full")
	fs.StringVar(&o.wallet, "wallet", "default", "the wallet `name` the command acts on")
	fs.BoolVar(&o.json, "json", false, "print the answer, or the error, as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return cli.ExitStatus(err)
	}
	var cmd *command
	if len(fs.Args()) > 0 {
		c, err := parseCommand(fs.Args(), o.wallet, o.json)
		if err != nil {
			return cli.ExitStatus(fs.Fail("%v", err))
		}
		cmd = &c
	}
	if err := CheckName(o.wallet); err != nil {
		return cli.ExitStatus(fs.Fail("-wallet=%s: %v", o.wallet, err))
	}
	if o.waitTimeout < 0 {
		return cli.ExitStatus(fs.Fail("-ipcwaittimeout=%s: must not be negative (0 means no limit)", o.waitTimeout))
	}
	if cmd != nil && o.connect == "0" {
		return cli.ExitStatus(fs.Fail("%s needs a node, and -ipcconnect=0 says not to connect to one", cmd.name))
	}
	if o.connect != "0" {
		// The data directory matters only where the address is in it.
		if o.dataDir == "" && needsDataDir(o.connect) {
			return cli.ExitStatus(fs.Fail("no data directory: give -datadir=DIR, where the node listens (or -ipcconnect=unix:/absolute/path)"))
		}
		addr := o.connect
		if addr == "auto" {
			addr = "unix"
		}
		if _, err := process.ParseAddress(o.dataDir, nodeExeName, addr); err != nil {
			return cli.ExitStatus(fs.Fail("-ipcconnect=%s: %s", o.connect, cli.AddressError(err)))
		}
	}
	debugIPC := o.debug.Has("ipc")
	log := cli.NewLogger(os.Stderr, ExeName, debugIPC)
	if cmd != nil && !debugIPC {
		// A command's output is its answer; the connection's
		// progress would be noise.
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	i := ipc.New(ExeName, args[0], schema.InitInterface, NewInit, &ipc.Options{
		Logger:             log,
		DebugIPC:           debugIPC,
		Application:        schema.Application,
		ApplicationVersion: schema.ProtocolVersion,
	})
	defer i.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cmd != nil {
		return runCommand(ctx, i, o, *cmd)
	}
	return watchNode(ctx, i, log, o)
}

// needsDataDir reports whether the node's address connect is found in the
// data directory.
func needsDataDir(connect string) bool {
	path, ok := strings.CutPrefix(connect, "unix:")
	return !ok || path == "" || !filepath.IsAbs(path)
}

// watchNode is the wallet without a command: it connects, checks that the
// node answers, and waits until SIGINT or until the node goes away.
func watchNode(ctx context.Context, i *ipc.Ipc[schema.Init], log *slog.Logger, o options) int {
	if o.connect == "0" {
		log.Info("running without a node (-ipcconnect=0)")
		<-ctx.Done()
		return cli.ExitOK
	}
	log.Info("connecting to the node", "ipcconnect", o.connect)
	node, err := connectNode(ctx, i, o, o.connect == "auto")
	if err != nil {
		msg, status := describeError(err, command{}, o)
		log.Error("cannot connect to the node: "+msg, "err", err)
		return status
	}
	if node == nil {
		log.Info("no node is listening; running without one (-ipcconnect=auto)")
		<-ctx.Done()
		log.Info("shutting down")
		return cli.ExitOK
	}
	defer mp.Release(node)
	lost := make(chan struct{})
	if err := i.AddCleanup(node, func() { close(lost) }); err != nil {
		log.Error("cannot watch the connection to the node", "err", err)
		return cli.ExitFailed
	}
	reply, err := appinit.CallEcho(ctx, node, "hello from wallet")
	if err != nil {
		log.Error("calling the node failed", "err", err)
		return cli.ExitNotConnected
	}
	log.Info("node answered", "echo", reply)
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-lost:
		log.Info("the node closed the connection; exiting")
	}
	return cli.ExitOK
}

// connectNode connects to the node at o's address. With auto and no node
// listening, it returns nil and no error; with -ipcwait it waits for the
// node until ctx ends or -ipcwaittimeout passes.
func connectNode(ctx context.Context, i *ipc.Ipc[schema.Init], o options, auto bool) (schema.Init, error) {
	addr := o.connect
	if addr == "auto" {
		addr = "unix"
	}
	if o.wait && o.waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	for {
		// Bounds one attempt when the node's backlog stays full; a node
		// at its connection limit answers within the start timeout or
		// not.
		cctx, cancel := context.WithTimeout(ctx, ipc.DefaultStartTimeout)
		node, err := i.ConnectAddress(cctx, o.dataDir, nodeExeName, addr)
		cancel()
		if err == nil && node != nil && o.wait {
			// Listening is not answering: a node still starting up
			// answers once its start-up is complete.
			if _, err = i.Handshake(ctx, node); err != nil {
				mp.Release(node)
				node = nil
			}
		}
		switch {
		case err == nil && node != nil:
			return node, nil
		case !o.wait && errors.Is(err, process.ErrNoListener) && auto:
			return nil, nil
		case !o.wait:
			return nil, err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, fmt.Errorf("waiting for the node: %w", ctx.Err())
			}
			return nil, &waitError{timeout: o.waitTimeout, last: err}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitError is -ipcwait giving up: no node answered within
// -ipcwaittimeout (or before the command's own deadline).
type waitError struct {
	timeout time.Duration
	last    error // the last attempt's
}

func (e *waitError) Error() string {
	return fmt.Sprintf("no node answered within -ipcwaittimeout=%s: %v", e.timeout, e.last)
}

func (e *waitError) Unwrap() error { return e.last }

// nodeAddress is the address the wallet connects to, as the node logs it
// ("unix:/path/node.sock"), or o.connect itself if it does not parse.
func nodeAddress(o options) string {
	addr := o.connect
	if addr == "auto" {
		addr = "unix"
	}
	path, err := process.ParseAddress(o.dataDir, nodeExeName, addr)
	if err != nil {
		return addr
	}
	return process.Address(path)
}

// runCommand connects to the node and carries out cmd, and says what went
// wrong in the user's terms: one line, with the next step to take, and
// the exit status of its class.
func runCommand(ctx context.Context, i *ipc.Ipc[schema.Init], o options, cmd command) int {
	// Connecting has limits of its own (one attempt, or -ipcwait's);
	// the command has commandTimeout once connected.
	node, err := connectNode(ctx, i, o, false)
	if err == nil {
		defer mp.Release(node)
		cctx, cancel := context.WithTimeout(ctx, commandTimeout)
		err = cmd.run(cctx, node, os.Stdout)
		cancel()
	}
	if err == nil {
		return cli.ExitOK
	}
	msg, status := describeError(err, cmd, o)
	if o.json {
		printJSONError(os.Stdout, msg, err, status)
	} else {
		fmt.Fprintf(os.Stderr, "wallet: %s: %s\n", cmd.name, msg)
	}
	if o.debug.Has("ipc") {
		fmt.Fprintf(os.Stderr, "wallet: the error in full: %v\n", err)
	}
	return status
}

// describeError returns what the user reads for err, the error of cmd,
// and the exit status of its class.
func describeError(err error, cmd command, o options) (string, int) {
	var (
		down *ipc.ChildDownError
		wait *waitError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted", cli.ExitFailed
	case errors.As(err, &wait):
		return fmt.Sprintf("no node answered at %s within -ipcwaittimeout=%s", nodeAddress(o), wait.timeout), cli.ExitNotConnected
	case errors.Is(err, process.ErrNoListener):
		return fmt.Sprintf("no node is listening at %s: start the node with -ipcbind=unix, or wait for it with -ipcwait", nodeAddress(o)), cli.ExitNotConnected
	case errors.Is(err, mp.ErrDisconnected):
		return "the connection to the node ended before it answered: is it stopping?", cli.ExitNotConnected
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("the node did not answer within %s", commandTimeout), cli.ExitFailed
	case errors.Is(err, schema.ErrNoWallet):
		return "the node runs without a wallet (-disablewallet): start it without that option", cli.ExitRefused
	case errors.As(err, &down):
		return down.Error(), cli.ExitRefused
	case errors.Is(err, ipc.ErrChildRestarting), errors.Is(err, ipc.ErrChildGaveUp):
		return remoteText(err), cli.ExitRefused
	case errors.Is(err, schema.ErrShuttingDown):
		return "the node is shutting down", cli.ExitRefused
	case errors.Is(err, walletdb.ErrNotExist):
		return fmt.Sprintf("there is no wallet %q: create it with 'wallet createwallet %s'", cmd.walletArg(), cmd.walletArg()), cli.ExitNotFound
	case errors.Is(err, schema.ErrNotLoaded):
		return fmt.Sprintf("wallet %q is not loaded: load it with 'wallet loadwallet %s'", cmd.walletArg(), cmd.walletArg()), cli.ExitNotFound
	case errors.Is(err, walletdb.ErrExists):
		return fmt.Sprintf("wallet %q exists already: load it with 'wallet loadwallet %s'", cmd.walletArg(), cmd.walletArg()), cli.ExitRefused
	case errors.Is(err, walletdb.ErrInUse):
		return fmt.Sprintf("wallet %q is in use by another process", cmd.walletArg()), cli.ExitRefused
	case errors.Is(err, walletdb.ErrDamaged):
		return remoteText(err), cli.ExitDataDamaged
	case errors.Is(err, schema.ErrNotServed), errors.Is(err, mp.ErrUnimplemented):
		return "the process at that address does not serve this command: is it a node?", cli.ExitFailed
	}
	return remoteText(err), cli.ExitFailed
}

// remoteText is err's text without the runtime's wrapping: the peer's own
// words for an error from another process.
func remoteText(err error) string {
	var re *mp.RemoteError
	if errors.As(err, &re) {
		return re.Reason
	}
	return err.Error()
}

// printJSONError writes the error as one JSON object: what the user
// reads, the declared error's code if any, and the exit status.
func printJSONError(w io.Writer, msg string, err error, status int) {
	v := struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code,omitempty"`
			Status  int    `json:"status"`
		} `json:"error"`
	}{}
	v.Error.Message, v.Error.Status = msg, status
	var re *mp.RemoteError
	if errors.As(err, &re) {
		v.Error.Code = re.Code
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
