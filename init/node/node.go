package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// ExeName is the node executable's name; -ipcbind=unix listens on
// <datadir>/node.sock.
const ExeName = "node"

// WalletExeName is the executable the node spawns as its wallet.
const WalletExeName = "wallet"

// Init is the node's Init for one connection. It serves makeNode and
// makeChain when it belongs to a running node (Run); one made by NewInit
// serves only what every executable serves.
type Init struct {
	ipc.BaseInit
	node *node // nil outside Run
}

// NewInit is an ipc.InitFactory for an Init that serves only ipc.BaseInit's
// methods, for processes that connect to a node without being one.
func NewInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}})
}

// Config is what the node's command line sets.
type Config struct {
	DataDir         string        // created with mode 0700 and locked for the node's lifetime
	DisableWallet   bool          // run without a wallet child
	WalletName      string        // the wallet to load or create (-wallet); "" means "default"
	BlockInterval   time.Duration // produce a block this often (-blockinterval); 0 means only on request
	PayTo           string        // the address blocks pay (-payto); "" means a new address of the wallet, if any
	IPCBind         []string      // addresses to accept IPC connections on (-ipcbind)
	IPCMaxConns     int           // connections served at once per -ipcbind address; 0 means 16
	IPCMsgTimeout   time.Duration // drop a peer that leaves a message incomplete this long; 0 means ipc's default, negative never
	IPCWriteTimeout time.Duration // drop a peer that takes no byte of a write this long; 0 means ipc's default, negative never
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

	n := &node{log: log, payTo: cfg.PayTo}
	i := ipc.New(ExeName, os.Args[0], n.newInit, &ipc.Options{
		Logger:          log,
		DebugIPC:        cfg.DebugIPC,
		ShutdownTimeout: cfg.ShutdownTimeout,
		MaxConnections:  cfg.IPCMaxConns,
		MessageTimeout:  cfg.IPCMsgTimeout,
		WriteTimeout:    cfg.IPCWriteTimeout,
	})
	defer i.Close()

	lt := i.Context().Lifetime
	n.ipc = i
	// On a start-up failure, stop what did start, in reverse order.
	defer lt.Shutdown()
	if err := lt.Start(schema.Subsystem_database, func() (func(), error) {
		store, err := chain.Open(filepath.Join(cfg.DataDir, "chain.db"))
		if err != nil {
			return nil, err
		}
		n.chain = newChainService(store, log)
		tip := store.Tip()
		log.Info("chain loaded", "height", tip.Height, "hash", tip.Hash.String())
		n.chain.logBlocks(n)
		return n.chain.stop, nil
	}); err != nil {
		return err
	}
	if len(cfg.IPCBind) > 0 {
		err := lt.Start(schema.Subsystem_ipcListener, func() (func(), error) {
			for _, addr := range cfg.IPCBind {
				if _, err := i.ListenAddress(cfg.DataDir, addr); err != nil {
					i.DisconnectIncoming()
					return nil, fmt.Errorf("-ipcbind=%s: %w", addr, err)
				}
			}
			return func() {
				// Let subscribers see the shutdown so far before
				// their connections end.
				ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
				defer cancel()
				if err := lt.Flush(ctx); err != nil {
					log.Warn("IPC clients did not take the last lifetime events in time", "err", err)
				}
				i.DisconnectIncoming()
			}, nil
		})
		if err != nil {
			return err
		}
	}
	if !cfg.DisableWallet {
		if err := lt.Start(schema.Subsystem_walletProcess, func() (func(), error) {
			return n.startWallet(ctx, cfg)
		}); err != nil {
			return err
		}
	}
	if cfg.BlockInterval > 0 {
		if err := lt.Start(schema.Subsystem_blockProducer, func() (func(), error) {
			return n.startProducer(cfg.BlockInterval), nil
		}); err != nil {
			return err
		}
	}
	lt.StartupComplete()
	log.Info("node started", "datadir", cfg.DataDir)

	select {
	case <-ctx.Done():
	case <-i.Context().StopRequested():
	}
	log.Info("shutting down")
	lt.Shutdown()
	return i.Close()
}

// flushTimeout bounds how long the node waits, when stopping, for IPC
// clients to receive its lifetime events.
const flushTimeout = 5 * time.Second

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
