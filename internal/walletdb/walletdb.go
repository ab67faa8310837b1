package walletdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile"
	"github.com/gomultiprocess/multiprocess/mp"
)

// OpenTimeout is how long opening waits for another process to let go
// of the database before it fails with ErrInUse.
const OpenTimeout = time.Second

// The errors of the wallet store. They are declared errors (package
// mp): they keep their identity across processes, so that errors.Is
// matches them in the node and the command-line tool as in the wallet
// process.
var (
	// ErrInUse is returned when another process has the wallet open.
	ErrInUse = mp.NewError("walletdb.inUse", "walletdb: wallet in use by another process")
	// ErrExists is returned by Create for a wallet that exists.
	ErrExists = mp.NewError("walletdb.exists", "walletdb: wallet exists")
	// ErrNotExist is returned by Open for a wallet that does not exist.
	ErrNotExist = mp.NewError("walletdb.notExist", "walletdb: no such wallet")
	// ErrClosed is returned by calls on a closed DB.
	ErrClosed = mp.NewError("walletdb.closed", "walletdb: closed")
	// ErrOutOfOrder is returned by ApplyBlock for a block that does not
	// follow the last one applied.
	ErrOutOfOrder = mp.NewError("walletdb.outOfOrder", "walletdb: block out of order")
	// ErrDamaged is what every *DamagedError matches with errors.Is.
	ErrDamaged = mp.NewError("walletdb.damaged", "walletdb: wallet database damaged")
)

// DamagedError says that a wallet database is damaged. Open returns it
// when the check it makes finds damage; a DB returns it from the call
// that finds damage later (bbolt panicked or faulted, a record does not
// decode, the payouts do not add up to the balance), and from every call
// after that, without reading the file again. It matches ErrDamaged, and
// Err, with errors.Is.
type DamagedError struct {
	Path   string // the database file
	Detail string // what is wrong, in a few words
	Err    error  // what found it: a *boltfile.Error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("wallet database %s is damaged (%s): restore it from a backup, or move it away to start afresh with an empty wallet", e.Path, e.Detail)
}

func (e *DamagedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrDamaged}
	}
	return []error{ErrDamaged, e.Err}
}

var (
	bucketMeta      = []byte("meta")      // seed, next, lasthash, nextaddr, balance
	bucketAddresses = []byte("addresses") // address -> index
	bucketTxs       = []byte("txs")       // sequence (8 bytes) -> JSON Transaction
)

// Transaction is one payout the wallet received.
type Transaction struct {
	Height    uint64
	BlockHash chain.Hash
	Address   string
	Amount    int64
	Time      time.Time
}

// State is where the wallet stands.
type State struct {
	Balance int64 // sum of what the wallet received, in the smallest unit
	// Next is the height of the next block to apply: 0 before the
	// genesis block has been applied.
	Next     uint64
	LastHash chain.Hash // the hash of block Next-1; zero when Next is 0
}

// DB is one wallet's database. Its methods are safe for concurrent use.
type DB struct {
	db *boltfile.DB

	mu     sync.Mutex
	state  State
	closed bool
	// applied is closed and replaced when state.Next moves, the DB
	// closes or damage is found.
	applied chan struct{}
}

// Create creates the wallet database at path; ErrExists if it exists. The
// file appears under its name only once it is complete, so a crash during
// Create never leaves a half-made wallet.
func Create(path string) (*DB, error) {
	db, err := boltfile.Create(path, options(path), func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketAddresses); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketTxs); err != nil {
			return err
		}
		seed := make([]byte, 32)
		if _, err := rand.Read(seed); err != nil {
			return err
		}
		return meta.Put([]byte("seed"), seed)
	})
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	}
	return open(path, db, err)
}

// Open opens the existing wallet database at path; ErrNotExist if there
// is none, ErrInUse if another process has it open, a *DamagedError if
// it is damaged. It checks the whole file first (see boltfile.Open for
// what that costs), then the records the wallet relies on.
func Open(path string) (*DB, error) {
	db, err := boltfile.Open(path, options(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, path)
	}
	return open(path, db, err)
}

func options(path string) boltfile.Options {
	return boltfile.Options{
		Timeout: OpenTimeout,
		Damaged: func(e *boltfile.Error) error { return &DamagedError{Path: path, Detail: e.Problem, Err: e} },
	}
}

func open(path string, db *boltfile.DB, err error) (*DB, error) {
	switch {
	case errors.Is(err, boltfile.ErrInUse):
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	case errors.Is(err, ErrDamaged):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("walletdb: open %s: %w", path, err)
	}
	w := &DB{db: db, applied: make(chan struct{})}
	err = db.View(func(tx *bolt.Tx) error {
		meta, _, _, err := buckets(tx)
		if err != nil {
			return err
		}
		if len(meta.Get([]byte("seed"))) != 32 {
			return boltfile.Damage(nil, "its seed is missing")
		}
		w.state, err = readState(meta)
		return err
	})
	if err != nil {
		_ = db.Close()
		if !errors.Is(err, ErrDamaged) {
			err = fmt.Errorf("walletdb: open %s: %w", path, err)
		}
		return nil, err
	}
	return w, nil
}

func buckets(tx *bolt.Tx) (meta, addrs, txs *bolt.Bucket, err error) {
	meta, addrs, txs = tx.Bucket(bucketMeta), tx.Bucket(bucketAddresses), tx.Bucket(bucketTxs)
	if meta == nil || addrs == nil || txs == nil {
		return nil, nil, nil, boltfile.Damage(nil, "it is not a wallet, or its records are missing")
	}
	return meta, addrs, txs, nil
}

// getUint reads a number from the meta bucket; absent is 0.
func getUint(b *bolt.Bucket, k string) (uint64, error) {
	v := b.Get([]byte(k))
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, boltfile.Damage(nil, "its record %q is %d bytes long, not 8", k, len(v))
}

func putUint(b *bolt.Bucket, k string, n uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	return b.Put([]byte(k), v[:])
}

func readState(meta *bolt.Bucket) (State, error) {
	var s State
	next, err := getUint(meta, "next")
	if err != nil {
		return s, err
	}
	balance, err := getUint(meta, "balance")
	if err != nil {
		return s, err
	}
	s.Next, s.Balance = next, int64(balance)
	if h := meta.Get([]byte("lasthash")); len(h) == len(s.LastHash) {
		copy(s.LastHash[:], h)
	} else if len(h) != 0 || s.Next > 0 {
		return s, boltfile.Damage(nil, "its record of the last block applied is damaged")
	}
	return s, nil
}

// Close closes the database. Close is idempotent.
func (w *DB) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.applied)
	w.mu.Unlock()
	return w.db.Close()
}

// State returns where the wallet stands.
func (w *DB) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Err returns the *DamagedError found in the database, or nil.
func (w *DB) Err() error { return w.db.Err() }

// NewAddress derives, records and returns a new receiving address.
func (w *DB) NewAddress() (string, error) {
	var addr string
	err := w.update(func(tx *bolt.Tx) error {
		meta, addrs, _, err := buckets(tx)
		if err != nil {
			return err
		}
		seed := meta.Get([]byte("seed"))
		if len(seed) != 32 {
			return boltfile.Damage(nil, "its seed is missing")
		}
		n, err := getUint(meta, "nextaddr")
		if err != nil {
			return err
		}
		var idx [8]byte
		binary.BigEndian.PutUint64(idx[:], n)
		sum := sha256.Sum256(append(append([]byte(nil), seed...), idx[:]...))
		addr = "mp1" + hex.EncodeToString(sum[:20])
		if err := addrs.Put([]byte(addr), idx[:]); err != nil {
			return err
		}
		return putUint(meta, "nextaddr", n+1)
	})
	return addr, err
}

// ApplyBlock records what b pays to this wallet's addresses, and that b
// has been applied, in one durable transaction. A block already applied
// (b.Height below State().Next, with the same hash) is skipped and
// reported with applied=false; one that does not follow the last block
// applied is refused with ErrOutOfOrder.
func (w *DB) ApplyBlock(b chain.Block) (applied bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false, ErrClosed
	}
	if err := w.db.Err(); err != nil {
		return false, err
	}
	st := w.state
	if b.Height < st.Next {
		return false, nil
	}
	if b.Height != st.Next || (b.Height > 0 && b.Parent != st.LastHash) {
		return false, fmt.Errorf("%w: got block %d (parent %s), want block %d on %s", ErrOutOfOrder, b.Height, b.Parent, st.Next, st.LastHash)
	}
	// Holding mu across the write keeps state equal to what is on disk.
	err = w.db.Update(func(tx *bolt.Tx) error {
		meta, addrs, txs, err := buckets(tx)
		if err != nil {
			return err
		}
		for _, p := range b.Payouts {
			if addrs.Get([]byte(p.Address)) == nil {
				continue
			}
			seq, err := txs.NextSequence()
			if err != nil {
				return err
			}
			v, err := json.Marshal(Transaction{Height: b.Height, BlockHash: b.Hash, Address: p.Address, Amount: p.Amount, Time: b.Time})
			if err != nil {
				return err
			}
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			if err := txs.Put(k[:], v); err != nil {
				return err
			}
			st.Balance += p.Amount
		}
		st.Next = b.Height + 1
		st.LastHash = b.Hash
		if err := putUint(meta, "next", st.Next); err != nil {
			return err
		}
		if err := putUint(meta, "balance", uint64(st.Balance)); err != nil {
			return err
		}
		return meta.Put([]byte("lasthash"), st.LastHash[:])
	})
	if errors.Is(err, ErrDamaged) {
		// Whoever waits for this block learns of the damage instead.
		close(w.applied)
		w.applied = make(chan struct{})
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("walletdb: apply block %d: %w", b.Height, err)
	}
	w.state = st
	close(w.applied)
	w.applied = make(chan struct{})
	return true, nil
}

// WaitApplied waits until every block up to height has been applied, or
// ctx ends, or the DB closes, or damage is found (a *DamagedError).
func (w *DB) WaitApplied(ctx context.Context, height uint64) error {
	for {
		w.mu.Lock()
		next, wake, closed := w.state.Next, w.applied, w.closed
		w.mu.Unlock()
		if next > height {
			return nil
		}
		if closed {
			return ErrClosed
		}
		if err := w.db.Err(); err != nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("wallet has applied blocks up to %d, not yet %d: %w", int64(next)-1, height, context.Cause(ctx))
		}
	}
}

// BalanceAt returns what the wallet had received right after the block at
// height. The wallet must have applied that block (see WaitApplied).
func (w *DB) BalanceAt(height uint64) (int64, error) {
	txs, err := w.Transactions()
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range txs {
		if t.Height <= height {
			sum += t.Amount
		}
	}
	return sum, nil
}

// Transactions returns what the wallet received, oldest first. It checks
// what it reads: records that do not decode, that are out of order or
// that do not add up to the balance mean damage.
func (w *DB) Transactions() ([]Transaction, error) {
	var out []Transaction
	err := w.view(func(tx *bolt.Tx) error {
		out = nil
		meta, addrs, txs, err := buckets(tx)
		if err != nil {
			return err
		}
		st, err := readState(meta)
		if err != nil {
			return err
		}
		var sum int64
		err = txs.ForEach(func(k, v []byte) error {
			var t Transaction
			if err := json.Unmarshal(v, &t); err != nil {
				return boltfile.Damage(err, "payout %x does not decode", k)
			}
			if len(out) > 0 && t.Height < out[len(out)-1].Height || t.Height >= st.Next || addrs.Get([]byte(t.Address)) == nil {
				return boltfile.Damage(nil, "payout %x is not one the wallet received", k)
			}
			sum += t.Amount
			out = append(out, t)
			return nil
		})
		if err != nil {
			return err
		}
		if sum != st.Balance {
			return boltfile.Damage(nil, "its payouts add up to %d, not to its balance %d", sum, st.Balance)
		}
		return nil
	})
	return out, err
}

func (w *DB) view(fn func(*bolt.Tx) error) error {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return ErrClosed
	}
	err := w.db.View(fn)
	if errors.Is(err, boltfile.ErrClosed) {
		return ErrClosed
	}
	return err
}

func (w *DB) update(fn func(*bolt.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.db.Update(fn)
}
