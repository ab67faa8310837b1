package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// MaxGenerate is the most blocks one generateBlocks call produces.
const MaxGenerate = 1000

// walletCallTimeout bounds each call the node makes to its wallet on its
// own behalf (the balance it logs with each block).
const walletCallTimeout = 30 * time.Second

// node is the state of a running node that its Inits share.
type node struct {
	log   *slog.Logger
	cfg   Config
	ipc   *ipc.Ipc[schema.Init]
	chain *chainService // set by the database subsystem, before any connection is served

	mu sync.Mutex
	// The wallet child's supervision, and the loader and wallet the node
	// got from the running child; nil while it is down, and for good
	// with -disablewallet.
	wallets *ipc.Supervised[schema.Init]
	loader  schema.WalletLoader
	wallet  schema.Wallet
	payTo   string
}

func (n *node) newInit(ctx *ipc.Context, _ *protocol.Conn) schema.Init {
	return &Init{Base: appinit.Base{Ctx: ctx}, node: n}
}

// MakeNode returns the node's control interface.
func (i *Init) MakeNode(ctx context.Context) (schema.Node, error) {
	if i.node == nil {
		return i.Base.MakeNode(ctx)
	}
	return &nodeServer{n: i.node, ctx: i.Ctx}, nil
}

// MakeChain returns the node's chain.
func (i *Init) MakeChain(ctx context.Context) (schema.Chain, error) {
	if i.node == nil {
		return i.Base.MakeChain(ctx)
	}
	return i.node.chain, nil
}

// walletRef returns a reference to the loaded wallet, nil when there is
// none; the caller releases it.
func (n *node) walletRef() schema.Wallet {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.wallet == nil {
		return nil
	}
	return mp.Retain(n.wallet)
}

// loaderRef returns a reference to the wallet child's loader, which the
// caller releases, or why there is none: schema.ErrNoWallet with
// -disablewallet, the supervisor's *ipc.ChildDownError while the child is
// down.
func (n *node) loaderRef() (schema.WalletLoader, error) {
	n.mu.Lock()
	sup, loader := n.wallets, n.loader
	if loader != nil {
		loader = mp.Retain(loader)
	}
	n.mu.Unlock()
	if loader != nil {
		return loader, nil
	}
	if sup == nil {
		return nil, schema.ErrNoWallet
	}
	child, err := sup.Current()
	if err != nil {
		return nil, err
	}
	// Running, but its setup has not handed over the loader yet.
	mp.Release(child)
	return nil, fmt.Errorf("%w: the wallet process is starting", ipc.ErrChildRestarting)
}

// dropWallet lets go of the wallet child's capabilities.
func (n *node) dropWallet() {
	n.mu.Lock()
	loader, wallet := n.loader, n.wallet
	n.loader, n.wallet = nil, nil
	n.mu.Unlock()
	mp.Release(wallet)
	mp.Release(loader)
}

func (n *node) payToAddress() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.payTo
}

// startWallet spawns the wallet under supervision, hands it the chain, and
// loads (or creates) the wallet cfg names; a wallet that exits by itself
// is restarted and set up again under cfg.WalletRestarts. The function it
// returns stops the child and waits until it is reaped.
func (n *node) startWallet(ctx context.Context) (stop func(), err error) {
	policy := DefaultWalletRestarts
	if n.cfg.WalletRestarts != nil {
		policy = *n.cfg.WalletRestarts
	}
	if policy.Permanent == nil {
		policy.Permanent = func(e ipc.ChildExit) string {
			if e.Status.Code == wallet.ExitDamaged {
				return "its data is damaged"
			}
			return ""
		}
	}
	// A signal during start-up lets it finish, so that the shutdown that
	// follows is the ordinary one.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ipc.DefaultStartTimeout)
	defer cancel()
	sup, err := n.ipc.Supervise(sctx, ipc.ChildSpec{Name: WalletExeName}, policy, n.setUpWallet, n.walletExited)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.wallets = sup
	n.mu.Unlock()
	n.log.Info("wallet loaded", "payto", n.payToAddress())
	return func() {
		sup.Stop()
		n.dropWallet()
	}, nil
}

// walletExited is told of each exit of the wallet child that the node
// did not ask for (ipc logs it at Error).
func (n *node) walletExited(ipc.ChildExit) {
	n.dropWallet()
}

// setUpWallet hands a new wallet child the node's settings and chain,
// then loads the wallet cfg names, creating it if it does not exist; the
// wallet reloads the others it had loaded itself.
func (n *node) setUpWallet(ctx context.Context, w schema.Init) error {
	dataDir, err := filepath.Abs(n.cfg.DataDir)
	if err != nil {
		return err
	}
	name := n.cfg.WalletName
	if name == "" {
		name = "default"
	}
	loader, err := w.MakeWalletLoader(ctx, &schema.WalletSettings{DataDir: dataDir}, n.chain)
	if err != nil {
		return fmt.Errorf("make wallet loader: %w", err)
	}
	wallet, err := loader.LoadWallet(ctx, name)
	if errors.Is(err, walletdb.ErrNotExist) {
		n.log.Info("creating wallet", "wallet", name)
		wallet, err = loader.CreateWallet(ctx, name)
	}
	if err != nil {
		mp.Release(loader)
		return fmt.Errorf("load wallet %q: %w", name, err)
	}
	if n.payToAddress() == "" {
		addr, err := wallet.GetNewAddress(ctx)
		if err != nil {
			mp.Release(wallet)
			mp.Release(loader)
			return fmt.Errorf("ask the wallet for an address: %w", err)
		}
		n.mu.Lock()
		n.payTo = addr
		n.mu.Unlock()
	}
	n.mu.Lock()
	old, oldLoader := n.wallet, n.loader
	n.loader, n.wallet = loader, wallet
	n.mu.Unlock()
	mp.Release(old)
	mp.Release(oldLoader)
	return nil
}

// logBlocks logs each block appended from now on, with the wallet's
// balance once the wallet has applied it: the node calls the wallet,
// which calls back into the node's chain and waits for the node's
// blockConnected call to reach it.
func (n *node) logBlocks() {
	s := n.chain
	from := s.store.Tip().Height + 1
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.store.Follow(s.ctx, from, func(ctx context.Context, b chain.Block) error {
			args := []any{"height", b.Height, "hash", b.Hash.String()}
			if w := n.walletRef(); w != nil {
				ctx, cancel := context.WithTimeout(ctx, walletCallTimeout)
				res, err := w.GetBalance(ctx, b.Height)
				cancel()
				mp.Release(w)
				if err != nil {
					args = append(args, "wallet_err", err)
				} else {
					args = append(args, "wallet_balance", chain.FormatAmount(res.Balance), "wallet_height", res.Height)
				}
			}
			n.log.Info("block connected", args...)
			return nil
		})
	}()
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

// nodeServer is schema.Node for one makeNode call. Its calls run
// concurrently: generateBlocks may take a while.
type nodeServer struct {
	mp.ConcurrentCalls
	n   *node
	ctx *ipc.Context
}

// BlockCount returns the height of the chain's tip.
func (s *nodeServer) BlockCount(context.Context) (uint64, error) {
	return s.n.chain.store.Tip().Height, nil
}

// GenerateBlocks appends count blocks paying address and returns their
// hashes.
func (s *nodeServer) GenerateBlocks(_ context.Context, count uint32, address string) ([][]byte, error) {
	if count < 1 || count > MaxGenerate {
		return nil, fmt.Errorf("count %d is out of range: 1 to %d", count, MaxGenerate)
	}
	blocks, err := s.n.generate(int(count), address)
	if err != nil {
		return nil, err
	}
	hashes := make([][]byte, len(blocks))
	for i, b := range blocks {
		hashes[i] = b.Hash[:]
	}
	return hashes, nil
}

// WalletLoader returns the wallet child's loader: a capability that lives
// in the wallet process, forwarded by the node (a reference of the
// caller's own).
func (s *nodeServer) WalletLoader(context.Context) (schema.WalletLoader, error) {
	return s.n.loaderRef()
}

// Stop asks the node to shut down, as SIGTERM does.
func (s *nodeServer) Stop(context.Context) error {
	s.n.log.Info("stop requested over IPC")
	s.ctx.RequestStop()
	return nil
}
