package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// MaxGenerate is the most blocks one generateBlocks call produces.
const MaxGenerate = 1000

// walletCallTimeout bounds each call the node makes to its wallet on its
// own behalf (the balance it logs with each block).
const walletCallTimeout = 30 * time.Second

// node is the state of a running node that its Inits share.
type node struct {
	log   *slog.Logger
	ipc   *ipc.Ipc
	chain *chainService // set by the database subsystem, before any connection is served

	mu sync.Mutex
	// The wallet child's loader and the wallet the node loaded from it;
	// invalid when the node runs without a wallet.
	walletLoader schema.WalletLoader
	wallet       schema.Wallet
	walletGone   bool // the wallet child has ended: never set the two above again
	payTo        string
}

func (n *node) newInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}, node: n})
}

// MakeNode returns the node's control interface.
func (i *Init) MakeNode(ctx context.Context, call schema.Init_makeNode) error {
	if i.node == nil {
		return i.BaseInit.MakeNode(ctx, call)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	srv := &nodeServer{n: i.node, ctx: i.Ctx}
	return res.SetNode(schema.Node(protocol.NewServer(schema.Node_Methods(nil, srv), srv, i.node.chain.opts)))
}

// MakeChain returns the node's chain.
func (i *Init) MakeChain(ctx context.Context, call schema.Init_makeChain) error {
	if i.node == nil {
		return i.BaseInit.MakeChain(ctx, call)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetChain(i.node.chain.capability())
}

// walletRef returns a reference to the loaded wallet, invalid when there
// is none; the caller releases it.
func (n *node) walletRef() schema.Wallet {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.wallet.IsValid() {
		return schema.Wallet{}
	}
	return n.wallet.AddRef()
}

// dropWallet lets go of the wallet child's capabilities for good.
func (n *node) dropWallet(gone bool) {
	n.mu.Lock()
	n.walletGone = n.walletGone || gone
	loader, wallet := n.walletLoader, n.wallet
	n.walletLoader, n.wallet = schema.WalletLoader{}, schema.Wallet{}
	n.mu.Unlock()
	wallet.Release()
	loader.Release()
}

func (n *node) payToAddress() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.payTo
}

// startWallet spawns the wallet, hands it the chain, and loads (or
// creates) the wallet cfg names. The function it returns releases the
// wallet's capabilities, stops the child and waits until it is reaped.
func (n *node) startWallet(ctx context.Context, cfg Config) (stop func(), err error) {
	w, err := n.ipc.SpawnProcess(ctx, WalletExeName)
	if err != nil {
		return nil, err
	}
	reaped := make(chan struct{})
	// However the child ends, the node carries on without a wallet.
	if err := n.ipc.AddCleanup(capnp.Client(w), func() { n.dropWallet(true); close(reaped) }); err != nil {
		w.Release()
		return nil, err
	}
	stop = func() {
		n.dropWallet(true)
		w.Release()
		<-reaped
	}
	reply, err := Echo(ctx, w, "hello from node")
	if err != nil {
		stop()
		return nil, fmt.Errorf("call wallet: %w", err)
	}
	n.log.Info("wallet answered", "echo", reply)

	// A signal during the rest of the start-up lets it finish, so that
	// the shutdown that follows is the ordinary one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ipc.DefaultStartTimeout)
	defer cancel()
	loader, wallet, err := n.loadWallet(ctx, w, cfg)
	if err != nil {
		stop()
		return nil, err
	}
	n.mu.Lock()
	gone := n.walletGone
	if !gone {
		n.walletLoader, n.wallet = loader, wallet
	}
	n.mu.Unlock()
	if gone {
		wallet.Release()
		loader.Release()
		stop()
		return nil, errors.New("the wallet process ended during start-up")
	}
	if n.payToAddress() == "" {
		addr, err := newAddress(ctx, wallet)
		if err != nil {
			stop()
			return nil, fmt.Errorf("ask the wallet for an address: %w", err)
		}
		n.mu.Lock()
		n.payTo = addr
		n.mu.Unlock()
	}
	n.log.Info("wallet loaded", "payto", n.payToAddress())
	return stop, nil
}

// loadWallet hands the wallet child the node's settings and chain, then
// loads the wallet cfg names, creating it if it does not exist.
func (n *node) loadWallet(ctx context.Context, w schema.Init, cfg Config) (schema.WalletLoader, schema.Wallet, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return schema.WalletLoader{}, schema.Wallet{}, err
	}
	name := cfg.WalletName
	if name == "" {
		name = "default"
	}
	made, release := w.MakeWalletLoader(ctx, func(p schema.Init_makeWalletLoader_Params) error {
		s, err := p.NewSettings()
		if err != nil {
			return err
		}
		if err := s.SetDataDir(dataDir); err != nil {
			return err
		}
		return p.SetChain(n.chain.capability())
	})
	defer release()
	res, err := made.Struct()
	if err != nil {
		return schema.WalletLoader{}, schema.Wallet{}, fmt.Errorf("make wallet loader: %w", err)
	}
	loader := res.Loader().AddRef()
	wallet, err := openWallet(ctx, loader, name, false)
	if err != nil && strings.Contains(err.Error(), "no such wallet") {
		n.log.Info("creating wallet", "wallet", name)
		wallet, err = openWallet(ctx, loader, name, true)
	}
	if err != nil {
		loader.Release()
		return schema.WalletLoader{}, schema.Wallet{}, fmt.Errorf("load wallet %q: %w", name, err)
	}
	return loader, wallet, nil
}

// openWallet calls loadWallet, or createWallet when create is set, and
// returns a reference of the caller's own to the wallet.
func openWallet(ctx context.Context, loader schema.WalletLoader, name string, create bool) (schema.Wallet, error) {
	if create {
		fut, release := loader.CreateWallet(ctx, func(p schema.WalletLoader_createWallet_Params) error { return p.SetName(name) })
		defer release()
		res, err := fut.Struct()
		if err != nil {
			return schema.Wallet{}, err
		}
		return res.Wallet().AddRef(), nil
	}
	fut, release := loader.LoadWallet(ctx, func(p schema.WalletLoader_loadWallet_Params) error { return p.SetName(name) })
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Wallet{}, err
	}
	return res.Wallet().AddRef(), nil
}

func newAddress(ctx context.Context, w schema.Wallet) (string, error) {
	fut, release := w.GetNewAddress(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return "", err
	}
	return res.Address()
}

// logBlocks logs each block appended from now on, with the wallet's
// balance once the wallet has applied it: the node calls the wallet,
// which calls back into the node's chain and waits for the node's
// blockConnected call to reach it.
func (s *chainService) logBlocks(n *node) {
	from := s.store.Tip().Height + 1
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.store.Follow(s.ctx, from, func(ctx context.Context, b chain.Block) error {
			args := []any{"height", b.Height, "hash", b.Hash.String()}
			if w := n.walletRef(); w.IsValid() {
				bal, height, err := balance(ctx, w, b.Height)
				w.Release()
				if err != nil {
					args = append(args, "wallet_err", err)
				} else {
					args = append(args, "wallet_balance", chain.FormatAmount(bal), "wallet_height", height)
				}
			}
			n.log.Info("block connected", args...)
			return nil
		})
	}()
}

// balance returns the wallet's balance once it has caught up with the
// chain's tip, and the height of the last block it has applied, which
// is b's or, when more blocks followed quickly, a later one's.
func balance(ctx context.Context, w schema.Wallet, atHeight uint64) (int64, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, walletCallTimeout)
	defer cancel()
	fut, release := w.GetBalance(ctx, func(p schema.Wallet_getBalance_Params) error {
		p.SetAtHeight(atHeight)
		return nil
	})
	defer release()
	if err := protocol.Await(ctx, fut.Future); err != nil {
		return 0, 0, err
	}
	res, err := fut.Struct()
	if err != nil {
		return 0, 0, err
	}
	return res.Balance(), res.Height(), nil
}

// generate appends count blocks paying address, or the node's payto
// address when it is empty.
func (n *node) generate(count int, address string) ([]chain.Block, error) {
	if address == "" {
		address = n.payToAddress()
	}
	if address == "" {
		return nil, errors.New("no address to pay: give one, start the node with -payto, or run it with a wallet")
	}
	blocks := make([]chain.Block, 0, count)
	for range count {
		b, err := n.chain.store.Append(time.Now(), []chain.Payout{{Address: address, Amount: chain.Reward}})
		if err != nil {
			return blocks, err
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// startProducer produces a block every interval until the returned
// function is called.
func (n *node) startProducer(interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := n.generate(1, ""); err != nil {
				n.log.Warn("producing a block failed", "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// nodeServer is schema.Node for one makeNode call.
type nodeServer struct {
	n   *node
	ctx *ipc.Context
}

func (s *nodeServer) BlockCount(_ context.Context, call schema.Node_blockCount) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(s.n.chain.store.Tip().Height)
	return nil
}

func (s *nodeServer) GenerateBlocks(_ context.Context, call schema.Node_generateBlocks) error {
	call.Go()
	count := int(call.Args().Count())
	if count < 1 || count > MaxGenerate {
		return fmt.Errorf("count %d is out of range: 1 to %d", count, MaxGenerate)
	}
	addr, err := call.Args().Address()
	if err != nil {
		return fmt.Errorf("read address: %w", err)
	}
	blocks, err := s.n.generate(count, addr)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	hashes, err := res.NewHashes(int32(len(blocks)))
	if err != nil {
		return err
	}
	for i, b := range blocks {
		if err := hashes.Set(i, b.Hash[:]); err != nil {
			return err
		}
	}
	return nil
}

func (s *nodeServer) WalletLoader(_ context.Context, call schema.Node_walletLoader) error {
	s.n.mu.Lock()
	var loader schema.WalletLoader
	if s.n.walletLoader.IsValid() {
		loader = s.n.walletLoader.AddRef()
	}
	s.n.mu.Unlock()
	if !loader.IsValid() {
		return errors.New("this node runs without a wallet")
	}
	res, err := call.AllocResults()
	if err != nil {
		loader.Release()
		return err
	}
	return res.SetLoader(loader)
}

func (s *nodeServer) Stop(context.Context, schema.Node_stop) error {
	s.n.log.Info("stop requested over IPC")
	s.ctx.RequestStop()
	return nil
}
