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
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/gomultiprocess/multiprocess/internal/chain"
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
)

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
	db *bolt.DB

	mu      sync.Mutex
	state   State
	closed  bool
	applied chan struct{} // closed and replaced when state.Next moves or the DB closes
}

// Create creates the wallet database at path; ErrExists if it exists.
func Create(path string) (*DB, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	}
	return open(path, true)
}

// Open opens the existing wallet database at path; ErrNotExist if there
// is none, ErrInUse if another process has it open.
func Open(path string) (*DB, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, path)
	}
	return open(path, false)
}

func open(path string, create bool) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: OpenTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("walletdb: open %s: %w", path, err)
	}
	w := &DB{db: db, applied: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if !create {
				return errors.New("not a wallet database")
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
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
			if err := meta.Put([]byte("seed"), seed); err != nil {
				return err
			}
		}
		w.state = readState(meta)
		return nil
	})
	if err != nil {
		_ = db.Close()
		if create {
			_ = os.Remove(path)
		}
		return nil, fmt.Errorf("walletdb: open %s: %w", path, err)
	}
	return w, nil
}

func getUint(b *bolt.Bucket, k string) uint64 {
	v := b.Get([]byte(k))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k string, n uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	return b.Put([]byte(k), v[:])
}

func readState(meta *bolt.Bucket) State {
	var s State
	s.Next = getUint(meta, "next")
	s.Balance = int64(getUint(meta, "balance"))
	copy(s.LastHash[:], meta.Get([]byte("lasthash")))
	return s
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

// NewAddress derives, records and returns a new receiving address.
func (w *DB) NewAddress() (string, error) {
	var addr string
	err := w.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		n := getUint(meta, "nextaddr")
		var idx [8]byte
		binary.BigEndian.PutUint64(idx[:], n)
		sum := sha256.Sum256(append(append([]byte(nil), meta.Get([]byte("seed"))...), idx[:]...))
		addr = "mp1" + hex.EncodeToString(sum[:20])
		if err := tx.Bucket(bucketAddresses).Put([]byte(addr), idx[:]); err != nil {
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
	st := w.state
	if b.Height < st.Next {
		return false, nil
	}
	if b.Height != st.Next || (b.Height > 0 && b.Parent != st.LastHash) {
		return false, fmt.Errorf("%w: got block %d (parent %s), want block %d on %s", ErrOutOfOrder, b.Height, b.Parent, st.Next, st.LastHash)
	}
	// Holding mu across the write keeps state equal to what is on disk.
	err = w.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		addrs := tx.Bucket(bucketAddresses)
		txs := tx.Bucket(bucketTxs)
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
	if err != nil {
		return false, fmt.Errorf("walletdb: apply block %d: %w", b.Height, err)
	}
	w.state = st
	close(w.applied)
	w.applied = make(chan struct{})
	return true, nil
}

// WaitApplied waits until every block up to height has been applied, or
// ctx ends, or the DB closes.
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

// Transactions returns what the wallet received, oldest first.
func (w *DB) Transactions() ([]Transaction, error) {
	var out []Transaction
	err := w.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTxs).ForEach(func(_, v []byte) error {
			var t Transaction
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
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
	return w.db.View(fn)
}

func (w *DB) update(fn func(*bolt.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.db.Update(fn)
}
