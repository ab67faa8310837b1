package wallet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chainwire"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// syncTimeout bounds how long getBalance and listTransactions wait for
// the wallet to catch up with the chain's tip.
const syncTimeout = 20 * time.Second

// disconnectTimeout bounds how long the wallet waits, when it stops, for
// the node to confirm that a chain subscription has ended.
const disconnectTimeout = 5 * time.Second

// Process is the state of a spawned wallet process that its Inits share:
// the loader that makeWalletLoader creates, once per process.
type Process struct {
	mu     sync.Mutex
	loader *loader // nil until makeWalletLoader
}

// NewProcess returns the state of a wallet process.
func NewProcess() *Process { return &Process{} }

// NewInit is the spawned wallet's ipc.InitFactory.
func (p *Process) NewInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}, proc: p})
}

// MakeWalletLoader starts the wallet's database and chain notification
// subsystems with the caller's settings and chain, and returns the
// loader. It succeeds once per process.
func (i *Init) MakeWalletLoader(ctx context.Context, call schema.Init_makeWalletLoader) error {
	if i.proc == nil {
		return i.BaseInit.MakeWalletLoader(ctx, call)
	}
	call.Go()
	settings, err := call.Args().Settings()
	if err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	dataDir, err := settings.DataDir()
	if err != nil {
		return fmt.Errorf("read data dir: %w", err)
	}
	if !filepath.IsAbs(dataDir) {
		return fmt.Errorf("data dir %q is not an absolute path", dataDir)
	}
	ch := call.Args().Chain()
	if !ch.IsValid() {
		return errors.New("no chain given")
	}
	log := i.Ctx.Logger
	l := &loader{
		dir:     filepath.Join(dataDir, "wallets"),
		log:     log,
		opts:    &protocol.ServerOptions{Logger: log},
		wallets: make(map[string]*entry),
	}
	i.proc.mu.Lock()
	if i.proc.loader != nil {
		i.proc.mu.Unlock()
		return errors.New("the wallet loader was made already: one per process")
	}
	i.proc.loader = l
	i.proc.mu.Unlock()

	lt := i.Ctx.Lifetime
	if err := lt.Start(schema.Subsystem_walletDatabase, func() (func(), error) {
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			return nil, err
		}
		return l.closeDatabases, nil
	}); err != nil {
		return err
	}
	if err := lt.Start(schema.Subsystem_chainNotifications, func() (func(), error) {
		l.mu.Lock()
		l.chain = ch.AddRef()
		l.mu.Unlock()
		return l.unsubscribe, nil
	}); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetLoader(schema.WalletLoader(protocol.NewServer(schema.WalletLoader_Methods(nil, l), l, l.opts)))
}

// loader loads wallets from <datadir>/wallets and keeps them loaded
// until the process stops.
type loader struct {
	dir  string
	log  *slog.Logger
	opts *protocol.ServerOptions

	// open serialises creating and loading, which open files and call the
	// node.
	open sync.Mutex

	mu      sync.Mutex
	chain   schema.Chain // invalid once unsubscribed
	stopped bool
	wallets map[string]*entry
}

// entry is one loaded wallet.
type entry struct {
	name   string
	db     *walletdb.DB
	handle schema.NotificationHandle // the chain subscription; invalid once ended
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (l *loader) CreateWallet(ctx context.Context, call schema.WalletLoader_createWallet) error {
	call.Go()
	name, err := call.Args().Name()
	if err != nil {
		return fmt.Errorf("read name: %w", err)
	}
	e, err := l.load(ctx, name, true)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetWallet(l.capability(e))
}

func (l *loader) LoadWallet(ctx context.Context, call schema.WalletLoader_loadWallet) error {
	call.Go()
	name, err := call.Args().Name()
	if err != nil {
		return fmt.Errorf("read name: %w", err)
	}
	e, err := l.load(ctx, name, false)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetWallet(l.capability(e))
}

func (l *loader) ListWallets(_ context.Context, call schema.WalletLoader_listWallets) error {
	l.mu.Lock()
	names := make([]string, 0, len(l.wallets))
	for n := range l.wallets {
		names = append(names, n)
	}
	l.mu.Unlock()
	slices.Sort(names)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	list, err := res.NewNames(int32(len(names)))
	if err != nil {
		return err
	}
	for i, n := range names {
		if err := list.Set(i, n); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) capability(e *entry) schema.Wallet {
	srv := &walletServer{l: l, e: e}
	return schema.Wallet(protocol.NewServer(schema.Wallet_Methods(nil, srv), srv, l.opts))
}

// load returns the loaded wallet name, or opens (or creates) it and
// subscribes it to the chain from the block after the last one it
// applied.
func (l *loader) load(ctx context.Context, name string, create bool) (*entry, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("invalid wallet name %q: use 1 to 64 letters, digits, '-' or '_'", name)
	}
	l.open.Lock()
	defer l.open.Unlock()
	l.mu.Lock()
	e, loaded := l.wallets[name]
	stopped := l.stopped
	ch := l.chain
	if ch.IsValid() {
		ch = ch.AddRef()
	}
	l.mu.Unlock()
	defer ch.Release()
	switch {
	case stopped || !ch.IsValid():
		return nil, errors.New("the wallet process is shutting down")
	case loaded && create:
		return nil, fmt.Errorf("wallet %q exists and is loaded", name)
	case loaded:
		return e, nil
	}
	path := filepath.Join(l.dir, name+".db")
	var (
		db  *walletdb.DB
		err error
	)
	if create {
		db, err = walletdb.Create(path)
	} else {
		db, err = walletdb.Open(path)
	}
	if err != nil {
		return nil, err
	}
	e = &entry{name: name, db: db}
	listener := &notifications{e: e, log: l.log.With("wallet", name)}
	st := db.State()
	fut, release := ch.HandleNotifications(ctx, func(p schema.Chain_handleNotifications_Params) error {
		p.SetFromHeight(st.Next)
		return p.SetListener(schema.ChainNotifications(protocol.NewServer(schema.ChainNotifications_Methods(nil, listener), listener, l.opts)))
	})
	defer release()
	err = protocol.Await(ctx, fut.Future)
	var res schema.Chain_handleNotifications_Results
	if err == nil {
		res, err = fut.Struct()
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("subscribe to the chain: %w", err)
	}
	e.handle = res.Handle().AddRef()
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		e.handle.Release()
		_ = db.Close()
		return nil, errors.New("the wallet process is shutting down")
	}
	l.wallets[name] = e
	l.mu.Unlock()
	l.log.Info("wallet loaded", "wallet", name, "next_height", st.Next, "balance", st.Balance)
	return e, nil
}

// unsubscribe ends every wallet's chain subscription, waiting (boundedly)
// until the node confirms that no blockConnected call is running, and
// lets go of the chain. It is the chainNotifications subsystem's stop.
func (l *loader) unsubscribe() {
	l.mu.Lock()
	l.stopped = true
	ch := l.chain
	l.chain = schema.Chain{}
	var handles []schema.NotificationHandle
	for _, e := range l.wallets {
		handles = append(handles, e.handle)
		e.handle = schema.NotificationHandle{}
	}
	l.mu.Unlock()
	// A load in flight (holding open) sees stopped when it is done and
	// ends its own subscription; waiting for it here keeps this stop
	// from returning before that.
	l.open.Lock()
	//lint:ignore SA2001 the critical section is the wait
	l.open.Unlock()
	for _, h := range handles {
		ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
		fut, release := h.Disconnect(ctx, nil)
		err := protocol.Await(ctx, fut.Future)
		if err == nil {
			_, err = fut.Struct()
		}
		if err != nil && !protocol.IsDisconnected(err) {
			l.log.Warn("ending a chain subscription failed", "err", err)
		}
		release()
		cancel()
		h.Release()
	}
	ch.Release()
}

// closeDatabases closes every loaded wallet's database. It is the
// walletDatabase subsystem's stop, and runs after unsubscribe.
func (l *loader) closeDatabases() {
	l.mu.Lock()
	l.stopped = true
	wallets := l.wallets
	l.wallets = make(map[string]*entry)
	l.mu.Unlock()
	for _, e := range wallets {
		if err := e.db.Close(); err != nil {
			l.log.Warn("closing a wallet database failed", "wallet", e.name, "err", err)
		}
	}
}

// notifications is the ChainNotifications listener of one wallet.
type notifications struct {
	e   *entry
	log *slog.Logger
}

// BlockConnected applies the block to the wallet and returns once it is
// committed: a returned call is a block on disk.
func (n *notifications) BlockConnected(_ context.Context, call schema.ChainNotifications_blockConnected) error {
	r, err := call.Args().Block()
	if err != nil {
		return fmt.Errorf("read block: %w", err)
	}
	b, err := chainwire.ReadBlock(r)
	if err != nil {
		return err
	}
	applied, err := n.e.db.ApplyBlock(b)
	if err != nil {
		n.log.Error("applying a block failed", "height", b.Height, "err", err)
		return err
	}
	if applied {
		n.log.Debug("block applied", "height", b.Height, "balance", n.e.db.State().Balance)
	}
	return nil
}

// walletServer is schema.Wallet for one loaded wallet.
type walletServer struct {
	l *loader
	e *entry
}

// sync waits until the wallet has applied every block up to the chain's
// tip as it is now: a call into the node, which delivers the missing
// blocks through blockConnected meanwhile.
func (w *walletServer) sync(ctx context.Context) error {
	w.l.mu.Lock()
	ch := w.l.chain
	if ch.IsValid() {
		ch = ch.AddRef()
	}
	w.l.mu.Unlock()
	if !ch.IsValid() {
		return errors.New("the wallet process is shutting down")
	}
	defer ch.Release()
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	fut, release := ch.Height(ctx, nil)
	defer release()
	if err := protocol.Await(ctx, fut.Future); err != nil {
		return fmt.Errorf("ask the node for its height: %w", err)
	}
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("ask the node for its height: %w", err)
	}
	return w.e.db.WaitApplied(ctx, res.Height())
}

func (w *walletServer) GetNewAddress(_ context.Context, call schema.Wallet_getNewAddress) error {
	addr, err := w.e.db.NewAddress()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAddress(addr)
}

func (w *walletServer) GetBalance(ctx context.Context, call schema.Wallet_getBalance) error {
	call.Go()
	if at := call.Args().AtHeight(); at > 0 {
		return w.balanceAt(ctx, call, at)
	}
	if err := w.sync(ctx); err != nil {
		return err
	}
	st := w.e.db.State()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetBalance(st.Balance)
	if st.Next > 0 {
		res.SetHeight(st.Next - 1)
	}
	return res.SetBlockHash(st.LastHash[:])
}

// balanceAt answers getBalance for the state right after block height,
// once the wallet has applied it.
func (w *walletServer) balanceAt(ctx context.Context, call schema.Wallet_getBalance, height uint64) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := w.e.db.WaitApplied(ctx, height); err != nil {
		return err
	}
	bal, err := w.e.db.BalanceAt(height)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetBalance(bal)
	res.SetHeight(height)
	return nil
}

func (w *walletServer) ListTransactions(ctx context.Context, call schema.Wallet_listTransactions) error {
	call.Go()
	if err := w.sync(ctx); err != nil {
		return err
	}
	txs, err := w.e.db.Transactions()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	list, err := res.NewTransactions(int32(len(txs)))
	if err != nil {
		return err
	}
	for i, t := range txs {
		e := list.At(i)
		e.SetHeight(t.Height)
		e.SetAmount(t.Amount)
		e.SetTimeUnixNano(t.Time.UnixNano())
		if err := e.SetBlockHash(t.BlockHash[:]); err != nil {
			return err
		}
		if err := e.SetAddress(t.Address); err != nil {
			return err
		}
	}
	return nil
}

func (w *walletServer) Name(_ context.Context, call schema.Wallet_name) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetName(w.e.name)
}
