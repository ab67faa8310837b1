package wallet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/chainwire"
	"github.com/gomultiprocess/multiprocess/internal/walletdb"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// syncTimeout bounds how long getBalance and listTransactions wait for
// the wallet to catch up with the chain's tip.
const syncTimeout = 20 * time.Second

// disconnectTimeout bounds how long the wallet waits, when it stops, for
// the node to confirm that a chain subscription has ended.
const disconnectTimeout = 5 * time.Second

// The wallet process's subsystems, as its lifetime events name them.
const (
	SubsystemWalletDatabase     = "walletDatabase"
	SubsystemChainNotifications = "chainNotifications"
)

// loadedFile lists, one per line, the wallets loaded in <datadir>/wallets,
// so that a wallet process started again (after a crash, or with the
// node) loads them again.
const loadedFile = "loaded"

// Process is the state of a spawned wallet process that its Inits share:
// the loader that makeWalletLoader creates, once per process.
type Process struct {
	mu     sync.Mutex
	loader *loader // nil until makeWalletLoader
}

// NewProcess returns the state of a wallet process.
func NewProcess() *Process { return &Process{} }

// NewInit is the spawned wallet's ipc.InitFactory.
func (p *Process) NewInit(ctx *ipc.Context, _ *protocol.Conn) schema.Init {
	return &Init{Base: appinit.Base{Ctx: ctx}, proc: p}
}

// MakeWalletLoader starts the wallet's database and chain notification
// subsystems with the caller's settings and chain, loads the wallets
// that were loaded when the process last ran, and returns the loader.
// It succeeds once per process.
func (i *Init) MakeWalletLoader(ctx context.Context, settings *schema.WalletSettings, ch schema.Chain) (schema.WalletLoader, error) {
	if i.proc == nil {
		return i.Base.MakeWalletLoader(ctx, settings, ch)
	}
	if settings == nil {
		return nil, errors.New("no settings given")
	}
	if !filepath.IsAbs(settings.DataDir) {
		return nil, fmt.Errorf("data dir %q is not an absolute path", settings.DataDir)
	}
	if ch == nil {
		return nil, errors.New("no chain given")
	}
	log := i.Ctx.Logger
	l := &loader{
		dir:     filepath.Join(settings.DataDir, "wallets"),
		log:     log,
		stop:    i.Ctx.StopWithStatus,
		wallets: make(map[string]*entry),
	}
	i.proc.mu.Lock()
	if i.proc.loader != nil {
		i.proc.mu.Unlock()
		return nil, errors.New("the wallet loader was made already: one per process")
	}
	i.proc.loader = l
	i.proc.mu.Unlock()

	lt := i.Ctx.Lifetime
	if err := lt.Start(SubsystemWalletDatabase, func() (func(), error) {
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			return nil, err
		}
		return l.closeDatabases, nil
	}); err != nil {
		return nil, err
	}
	if err := lt.Start(SubsystemChainNotifications, func() (func(), error) {
		l.mu.Lock()
		// A parameter, borrowed for this call: the loader keeps its own.
		l.chain = mp.Retain(ch)
		l.mu.Unlock()
		return l.unsubscribe, nil
	}); err != nil {
		return nil, err
	}
	l.reload(ctx)
	return l, nil
}

// loader loads wallets from <datadir>/wallets and keeps them loaded
// until the process stops. Its calls run concurrently: it has locks of
// its own (see package mp's ordering rule).
type loader struct {
	mp.ConcurrentCalls

	dir string
	log *slog.Logger
	// stop ends the process with a status: ExitDamaged when a loaded
	// wallet's data turns out damaged.
	stop func(status int)

	// open serialises creating and loading, which open files and call the
	// node.
	open sync.Mutex

	mu      sync.Mutex
	chain   schema.Chain // nil once unsubscribed
	stopped bool
	wallets map[string]*entry
}

var _ schema.WalletLoader = (*loader)(nil)

// entry is one loaded wallet.
type entry struct {
	name   string
	db     *walletdb.DB
	handle schema.NotificationHandle // the chain subscription; nil once ended
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// CheckName reports whether name may name a wallet: 1 to 64 letters,
// digits, '-' or '_'.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid wallet name %q: use 1 to 64 letters, digits, '-' or '_'", name)
	}
	return nil
}

// CreateWallet creates the wallet name and loads it.
func (l *loader) CreateWallet(ctx context.Context, name string) (schema.Wallet, error) {
	e, err := l.load(ctx, name, true)
	if err != nil {
		return nil, err
	}
	return l.walletOf(e), nil
}

// LoadWallet loads the existing wallet name, or returns it if it is
// loaded already.
func (l *loader) LoadWallet(ctx context.Context, name string) (schema.Wallet, error) {
	e, err := l.load(ctx, name, false)
	if err != nil {
		return nil, err
	}
	return l.walletOf(e), nil
}

// GetWallet returns the loaded wallet name, without loading it:
// schema.ErrNotLoaded if it exists but is not loaded, walletdb.ErrNotExist
// if it does not exist.
func (l *loader) GetWallet(_ context.Context, name string) (schema.Wallet, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	l.mu.Lock()
	e, loaded := l.wallets[name]
	l.mu.Unlock()
	if loaded {
		return l.walletOf(e), nil
	}
	if _, err := os.Stat(filepath.Join(l.dir, name+".db")); err != nil {
		return nil, fmt.Errorf("%w: %q", walletdb.ErrNotExist, name)
	}
	return nil, fmt.Errorf("%w: %q", schema.ErrNotLoaded, name)
}

// ListWallets returns the names of the loaded wallets, sorted.
func (l *loader) ListWallets(context.Context) ([]string, error) {
	l.mu.Lock()
	names := make([]string, 0, len(l.wallets))
	for n := range l.wallets {
		names = append(names, n)
	}
	l.mu.Unlock()
	slices.Sort(names)
	return names, nil
}

func (l *loader) walletOf(e *entry) schema.Wallet { return &walletServer{l: l, e: e} }

// load returns the loaded wallet name, or opens (or creates) it and
// subscribes it to the chain from the block after the last one it
// applied.
func (l *loader) load(ctx context.Context, name string, create bool) (*entry, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	l.open.Lock()
	defer l.open.Unlock()
	l.mu.Lock()
	e, loaded := l.wallets[name]
	stopped := l.stopped
	ch := l.chain
	if ch != nil {
		ch = mp.Retain(ch)
	}
	l.mu.Unlock()
	defer mp.Release(ch)
	switch {
	case stopped || ch == nil:
		return nil, schema.ErrShuttingDown
	case loaded && create:
		return nil, fmt.Errorf("%w: %q is loaded", walletdb.ErrExists, name)
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
	st := db.State()
	handle, err := ch.HandleNotifications(ctx, &notifications{e: e, log: l.log.With("wallet", name), stop: l.stop}, st.Next)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("subscribe to the chain: %w", err)
	}
	e.handle = handle
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		mp.Release(e.handle)
		_ = db.Close()
		return nil, schema.ErrShuttingDown
	}
	l.wallets[name] = e
	names := make([]string, 0, len(l.wallets))
	for n := range l.wallets {
		names = append(names, n)
	}
	l.mu.Unlock()
	if err := l.saveLoaded(names); err != nil {
		l.log.Warn("cannot record the loaded wallets", "err", err)
	}
	l.log.Info("wallet loaded", "wallet", name, "next_height", st.Next, "balance", st.Balance)
	return e, nil
}

// reload loads the wallets that were loaded when the process last ran.
// A wallet that cannot be loaded is logged and left out.
func (l *loader) reload(ctx context.Context) {
	names, err := l.readLoaded()
	if err != nil {
		l.log.Warn("cannot read which wallets were loaded", "err", err)
		return
	}
	for _, name := range names {
		if _, err := l.load(ctx, name, false); err != nil {
			l.log.Warn("cannot load a wallet that was loaded before", "wallet", name, "err", err)
		}
	}
}

func (l *loader) readLoaded() ([]string, error) {
	f, err := os.Open(filepath.Join(l.dir, loadedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); nameRE.MatchString(n) {
			names = append(names, n)
		}
	}
	return names, sc.Err()
}

// saveLoaded records names, replacing the file atomically.
func (l *loader) saveLoaded(names []string) error {
	slices.Sort(names)
	tmp, err := os.CreateTemp(l.dir, loadedFile+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(strings.Join(names, "\n") + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(l.dir, loadedFile))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// unsubscribe ends every wallet's chain subscription, waiting (boundedly)
// until the node confirms that no blockConnected call is running, and
// lets go of the chain. It is the chainNotifications subsystem's stop.
func (l *loader) unsubscribe() {
	l.mu.Lock()
	l.stopped = true
	ch := l.chain
	l.chain = nil
	var handles []schema.NotificationHandle
	for _, e := range l.wallets {
		handles = append(handles, e.handle)
		e.handle = nil
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
		if err := h.Disconnect(ctx); err != nil && !errors.Is(err, mp.ErrDisconnected) {
			l.log.Warn("ending a chain subscription failed", "err", err)
		}
		cancel()
		mp.Release(h)
	}
	mp.Release(ch)
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

// notifications is the ChainNotifications listener of one wallet. The
// node calls it one block at a time.
type notifications struct {
	e    *entry
	log  *slog.Logger
	stop func(status int)
}

// BlockConnected applies the block to the wallet and returns once it is
// committed: a returned call is a block on disk.
func (n *notifications) BlockConnected(_ context.Context, block *schema.Block) error {
	b, err := chainwire.FromWire(block)
	if err != nil {
		return err
	}
	applied, err := n.e.db.ApplyBlock(b)
	if errors.Is(err, walletdb.ErrDamaged) {
		// The data cannot be trusted: the wallet process stops, with
		// the status that tells its supervisor not to restart it.
		n.log.Error("the wallet process stops: a wallet's data is damaged", "err", err)
		if n.stop != nil {
			n.stop(ExitDamaged)
		}
		return err
	}
	if err != nil {
		n.log.Error("applying a block failed", "height", b.Height, "err", err)
		return err
	}
	if applied {
		n.log.Debug("block applied", "height", b.Height, "balance", n.e.db.State().Balance)
	}
	return nil
}

// walletServer is schema.Wallet for one loaded wallet. Its calls run
// concurrently: getBalance may wait for blocks while another call goes.
type walletServer struct {
	mp.ConcurrentCalls
	l *loader
	e *entry
}

var _ schema.Wallet = (*walletServer)(nil)

// sync waits until the wallet has applied every block up to the chain's
// tip as it is now: a call into the node, which delivers the missing
// blocks through blockConnected meanwhile.
func (w *walletServer) sync(ctx context.Context) error {
	w.l.mu.Lock()
	ch := w.l.chain
	if ch != nil {
		ch = mp.Retain(ch)
	}
	w.l.mu.Unlock()
	if ch == nil {
		return schema.ErrShuttingDown
	}
	defer mp.Release(ch)
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	height, err := ch.Height(ctx)
	if err != nil {
		return fmt.Errorf("ask the node for its height: %w", err)
	}
	return w.e.db.WaitApplied(ctx, height)
}

// GetNewAddress returns a new receiving address of the wallet.
func (w *walletServer) GetNewAddress(context.Context) (string, error) {
	return w.e.db.NewAddress()
}

// GetBalance returns the wallet's balance once it has caught up with the
// chain's tip, or right after block atHeight when it is above 0.
func (w *walletServer) GetBalance(ctx context.Context, atHeight uint64) (schema.Wallet_GetBalance_Results, error) {
	if atHeight > 0 {
		return w.balanceAt(ctx, atHeight)
	}
	if err := w.sync(ctx); err != nil {
		return schema.Wallet_GetBalance_Results{}, err
	}
	st := w.e.db.State()
	res := schema.Wallet_GetBalance_Results{Balance: st.Balance, BlockHash: st.LastHash[:]}
	if st.Next > 0 {
		res.Height = st.Next - 1
	}
	return res, nil
}

// balanceAt answers getBalance for the state right after block height,
// once the wallet has applied it.
func (w *walletServer) balanceAt(ctx context.Context, height uint64) (schema.Wallet_GetBalance_Results, error) {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := w.e.db.WaitApplied(ctx, height); err != nil {
		return schema.Wallet_GetBalance_Results{}, err
	}
	bal, err := w.e.db.BalanceAt(height)
	if err != nil {
		return schema.Wallet_GetBalance_Results{}, err
	}
	return schema.Wallet_GetBalance_Results{Balance: bal, Height: height}, nil
}

// ListTransactions returns what the wallet received, oldest first, once
// it has caught up with the chain's tip.
func (w *walletServer) ListTransactions(ctx context.Context) ([]schema.WalletTransaction, error) {
	if err := w.sync(ctx); err != nil {
		return nil, err
	}
	txs, err := w.e.db.Transactions()
	if err != nil {
		return nil, err
	}
	out := make([]schema.WalletTransaction, len(txs))
	for i, t := range txs {
		out[i] = schema.WalletTransaction{
			Height:       t.Height,
			BlockHash:    t.BlockHash[:],
			Address:      t.Address,
			Amount:       t.Amount,
			TimeUnixNano: t.Time.UnixNano(),
		}
	}
	return out, nil
}

// Name returns the wallet's name.
func (w *walletServer) Name(context.Context) (string, error) { return w.e.name, nil }
