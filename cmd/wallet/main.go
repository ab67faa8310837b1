package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"capnproto.org/go/capnp/v3"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	walletinit "github.com/gomultiprocess/multiprocess/init/wallet"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/ipc"
)

const usage = `Usage: wallet -ipcfd N
       wallet -datadir=DIR [-ipcconnect=ADDRESS] [options]
       wallet -datadir=DIR [-ipcconnect=ADDRESS] [options] COMMAND

The wallet runs as a child of the node, which starts it with -ipcfd and
talks to it over that socket. Start the node instead:

  node -datadir=DIR

Run by hand, the wallet connects to a node started with -ipcbind, calls
it, and runs until SIGINT or SIGTERM, or until the node closes the
connection.

With a COMMAND, the wallet asks a node started with -ipcbind=unix, and the
wallet process the node runs, and prints the answer: one line per fact,
or JSON with -json. Commands:

  getbalance         the wallet's balance, once it has caught up with the chain
  getnewaddress      a new receiving address
  listtransactions   what the wallet received, oldest first
  listwallets        the wallets the node's wallet process has loaded
  generate N         has the node produce N blocks paying a new address

Options:
`

func main() { os.Exit(run(os.Args)) }

func run(args []string) int {
	for _, a := range args[1:] {
		if a == "-ipcfd" || strings.HasPrefix(a, "-ipcfd=") {
			return runSpawned(args)
		}
	}
	return runByHand(args)
}

// runSpawned is the wallet started by the node: its settings come from the
// environment and over IPC, never from the command line.
func runSpawned(args []string) int {
	var debug cli.Debug
	if err := debug.Set(os.Getenv(ipc.EnvDebug)); err != nil {
		fmt.Fprintf(os.Stderr, "wallet: %s: %v\n", ipc.EnvDebug, err)
		return 1
	}
	debugIPC := debug.Has("ipc")
	log := cli.NewLogger(os.Stderr, walletinit.ExeName, debugIPC)
	i := ipc.New(walletinit.ExeName, args[0], walletinit.NewProcess().NewInit, &ipc.Options{Logger: log, DebugIPC: debugIPC})
	if handled, status := i.StartSpawnedProcess(args); handled {
		return status
	}
	// StartSpawnedProcess reads -ipcfd as run does; should they ever
	// disagree, the command line is a user's.
	_ = i.Close()
	return runByHand(args)
}

// runByHand is the wallet started by a user: it connects to a running node
// as -ipcconnect says.
func runByHand(args []string) int {
	fs := cli.NewFlagSet("wallet", usage)
	var (
		dataDir, connect, walletName string
		asJSON                       bool
		debug                        cli.Debug
	)
	fs.StringVar(&dataDir, "datadir", "", "the node's data `directory` (-ipcconnect=unix means <datadir>/node.sock)")
	fs.StringVar(&connect, "ipcconnect", "auto", "connect to the node at `address`: unix (<datadir>/node.sock) or unix:PATH, and fail if no node listens there; auto, to connect to <datadir>/node.sock if a node listens and run without one if not; 0, to run without a node")
	fs.Var(&debug, "debug", "log more about `category` (ipc)")
	fs.StringVar(&walletName, "wallet", "default", "with a command: the wallet `name` to use")
	fs.BoolVar(&asJSON, "json", false, "with a command: print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	var cmd *command
	if fs.NArg() > 0 {
		c, err := parseCommand(fs.Args(), walletName, asJSON)
		if err != nil {
			fmt.Fprintf(os.Stderr, "wallet: %v\n", err)
			fs.Usage()
			return 2
		}
		cmd = &c
	}
	if dataDir == "" {
		if len(args) > 1 {
			fmt.Fprintln(os.Stderr, "wallet: no data directory given (-datadir)")
		}
		fs.Usage()
		return 2
	}
	debugIPC := debug.Has("ipc")
	log := cli.NewLogger(os.Stderr, walletinit.ExeName, debugIPC)
	if cmd != nil && !debugIPC {
		// A command's output is its answer; the connection's
		// progress would be noise.
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	i := ipc.New(walletinit.ExeName, args[0], walletinit.NewInit, &ipc.Options{Logger: log, DebugIPC: debugIPC})
	defer i.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cmd != nil {
		return runCommand(ctx, i, log, dataDir, connect, *cmd)
	}
	node, err := connectNode(ctx, i, log, dataDir, connect)
	if err != nil {
		log.Error("cannot connect to the node", "err", err)
		return 1
	}
	if !node.IsValid() {
		<-ctx.Done()
		log.Info("shutting down")
		return 0
	}
	defer node.Release()

	lost := make(chan struct{})
	if err := i.AddCleanup(capnp.Client(node), func() { close(lost) }); err != nil {
		log.Error("cannot watch the connection to the node", "err", err)
		return 1
	}
	reply, err := nodeinit.Echo(ctx, node, "hello from wallet")
	if err != nil {
		log.Error("calling the node failed", "err", err)
		return 1
	}
	log.Info("node answered", "echo", reply)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-lost:
		log.Info("the node closed the connection; exiting")
	}
	return 0
}

// connectNode connects as -ipcconnect=connect says. It returns an invalid
// Init and no error when the wallet is to run without a node.
func connectNode(ctx context.Context, i *ipc.Ipc, log *slog.Logger, dataDir, connect string) (schema.Init, error) {
	if connect == "0" {
		log.Info("running without a node (-ipcconnect=0)")
		return schema.Init{}, nil
	}
	log.Info("connecting to the node", "ipcconnect", connect)
	// Bounds the connect when the node's backlog stays full; a node at
	// its connection limit answers within ipc.DefaultStartTimeout or not.
	cctx, cancel := context.WithTimeout(ctx, ipc.DefaultStartTimeout)
	defer cancel()
	node, err := i.ConnectAddress(cctx, dataDir, nodeinit.ExeName, connect)
	if err != nil {
		return schema.Init{}, fmt.Errorf("-ipcconnect=%s: %w", connect, err)
	}
	if !node.IsValid() {
		log.Info("no node is listening; running without one (-ipcconnect=auto)")
	}
	return node, nil
}

// runCommand connects to the node and carries out cmd.
func runCommand(ctx context.Context, i *ipc.Ipc, log *slog.Logger, dataDir, connect string, cmd command) int {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	if connect == "0" {
		fmt.Fprintf(os.Stderr, "wallet: %s needs a node, and -ipcconnect=0 says not to connect to one\n", cmd.name)
		return 1
	}
	node, err := connectNode(ctx, i, log, dataDir, connect)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wallet: %v\n", err)
		return 1
	}
	if !node.IsValid() {
		fmt.Fprintln(os.Stderr, "wallet: no node is listening at <datadir>/node.sock: start it with -ipcbind=unix")
		return 1
	}
	defer node.Release()
	if err := cmd.run(ctx, node, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "wallet: %s: %v\n", cmd.name, err)
		return 1
	}
	return 0
}
