package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// ExeName is the node executable's name; -ipcbind=unix listens on
// <datadir>/node.sock.
const ExeName = "node"

// WalletExeName is the executable the node spawns as its wallet.
const WalletExeName = "wallet"

// Init is the node's Init for one connection.
type Init struct {
	ipc.BaseInit
}

// NewInit is the node's ipc.InitFactory.
func NewInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}})
}

// Config is what the node's command line sets.
type Config struct {
	DataDir         string        // created with mode 0700 and locked for the node's lifetime
	DisableWallet   bool          // run without a wallet child
	IPCBind         []string      // addresses to accept IPC connections on (-ipcbind)
	ShutdownTimeout time.Duration // how long the wallet may take to exit; 0 means ipc's default
	DebugIPC        bool          // log every IPC call
	Logger          *slog.Logger  // nil means silent
}

// Run runs the node until ctx ends, then stops the wallet child and every
// IPC connection, and returns. Start-up failures are returned at once.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return errors.New("no data directory given (-datadir)")
	}
	lock, err := process.LockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()

	i := ipc.New(ExeName, os.Args[0], NewInit, &ipc.Options{
		Logger:          log,
		DebugIPC:        cfg.DebugIPC,
		ShutdownTimeout: cfg.ShutdownTimeout,
	})
	defer i.Close()

	for _, addr := range cfg.IPCBind {
		if _, err := i.ListenAddress(cfg.DataDir, addr); err != nil {
			return fmt.Errorf("-ipcbind=%s: %w", addr, err)
		}
	}

	var walletInit schema.Init
	if !cfg.DisableWallet {
		walletInit, err = i.SpawnProcess(ctx, WalletExeName)
		if err != nil {
			return err
		}
		defer walletInit.Release()
		reply, err := Echo(ctx, walletInit, "hello from node")
		if err != nil {
			return fmt.Errorf("call wallet: %w", err)
		}
		log.Info("wallet answered", "echo", reply)
	}

	log.Info("node started", "datadir", cfg.DataDir)
	<-ctx.Done()
	log.Info("shutting down")
	i.DisconnectIncoming()
	walletInit.Release()
	return i.Close()
}

// Echo asks init for an Echo and has it echo msg: a pipelined call, so one
// round trip.
func Echo(ctx context.Context, init schema.Init, msg string) (string, error) {
	made, release := init.MakeEcho(ctx, nil)
	defer release()
	fut, release2 := made.Result().Echo(ctx, func(p schema.Echo_echo_Params) error {
		return p.SetEcho(msg)
	})
	defer release2()
	res, err := fut.Struct()
	if err != nil {
		return "", err
	}
	return res.Result()
}
