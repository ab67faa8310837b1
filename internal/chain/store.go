package chain

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile"
)

// Reward is what each produced block pays, in the smallest unit.
const Reward int64 = 50_000

// OpenTimeout is how long Open waits for another process to let go of
// the database before it fails with ErrInUse.
const OpenTimeout = time.Second

var (
	// ErrInUse is returned by Open when another process has the
	// database open.
	ErrInUse = errors.New("chain: database in use by another process")
	// ErrNotFound is returned for a block that the chain does not have.
	ErrNotFound = errors.New("chain: no such block")
	// ErrClosed is returned by calls on a closed Store.
	ErrClosed = errors.New("chain: store closed")
	// ErrDamaged is what every *DamagedError matches with errors.Is.
	ErrDamaged = errors.New("chain: database damaged")
)

// DamagedError says that the chain database is damaged. Open returns it
// when the check it makes finds damage; a Store returns it from the call
// that finds damage later (bbolt panicked or faulted, a block does not
// match its hash), and from every call after that, without reading the
// file again. It matches ErrDamaged, and Err, with errors.Is.
type DamagedError struct {
	Path   string // the database file
	Detail string // what is wrong, in a few words
	Err    error  // what found it: a *boltfile.Error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("chain database %s is damaged (%s): restore it from a backup, or start the node with an empty data directory to begin a new chain", e.Path, e.Detail)
}

func (e *DamagedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrDamaged}
	}
	return []error{ErrDamaged, e.Err}
}

var (
	bucketBlocks = []byte("blocks") // height (8 bytes, big-endian) -> JSON block
	bucketIndex  = []byte("index")  // hash -> height
)

// Store is the chain in a bbolt database. Its methods are safe for
// concurrent use. Appends are serialised and each is durable when it
// returns.
type Store struct {
	db *boltfile.DB

	mu     sync.Mutex
	tip    Block
	closed bool
	// newTip is closed and replaced whenever the tip moves, the store
	// closes or damage is found; followers wait on it.
	newTip chan struct{}
}

// Open opens the chain database at path, creating it with a genesis block
// when it does not exist. It checks the whole file first (see
// boltfile.Open for what that costs) and the blocks it relies on: the
// first, the tip and the tip's index entry. A damaged file is a
// *DamagedError.
func Open(path string) (*Store, error) {
	o := boltfile.Options{
		Timeout: OpenTimeout,
		Damaged: func(e *boltfile.Error) error { return &DamagedError{Path: path, Detail: e.Problem, Err: e} },
	}
	db, err := boltfile.Open(path, o)
	if errors.Is(err, fs.ErrNotExist) {
		db, err = boltfile.Create(path, o, createChain)
		if errors.Is(err, fs.ErrExist) { // another process was quicker
			db, err = boltfile.Open(path, o)
		}
	}
	switch {
	case errors.Is(err, boltfile.ErrInUse):
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	case errors.Is(err, ErrDamaged):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("chain: open %s: %w", path, err)
	}
	s := &Store{db: db, newTip: make(chan struct{})}
	if err := db.View(func(tx *bolt.Tx) error { return readTip(tx, &s.tip) }); err != nil {
		_ = db.Close()
		if !errors.Is(err, ErrDamaged) {
			err = fmt.Errorf("chain: open %s: %w", path, err)
		}
		return nil, err
	}
	return s, nil
}

func createChain(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket(bucketBlocks); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketIndex); err != nil {
		return err
	}
	genesis := Block{Time: time.Unix(1231006505, 0)}
	genesis.Hash = genesis.ComputeHash()
	return put(tx, &genesis)
}

func buckets(tx *bolt.Tx) (blocks, index *bolt.Bucket, err error) {
	blocks, index = tx.Bucket(bucketBlocks), tx.Bucket(bucketIndex)
	if blocks == nil || index == nil {
		return nil, nil, boltfile.Damage(nil, "its blocks or its index are missing")
	}
	return blocks, index, nil
}

// readTip reads the last block, and checks the first block and the tip's
// index entry on the way.
func readTip(tx *bolt.Tx, tip *Block) error {
	blocks, index, err := buckets(tx)
	if err != nil {
		return err
	}
	c := blocks.Cursor()
	if k, _ := c.First(); k == nil || string(k) != string(key(0)) {
		return boltfile.Damage(nil, "its genesis block is missing")
	}
	k, v := c.Last()
	if err := decode(k, v, tip); err != nil {
		return err
	}
	if h := index.Get(tip.Hash[:]); string(h) != string(k) {
		return boltfile.Damage(nil, "the index has no entry for block %d", tip.Height)
	}
	return nil
}

func key(height uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], height)
	return k[:]
}

func put(tx *bolt.Tx, b *Block) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	blocks, index, err := buckets(tx)
	if err != nil {
		return err
	}
	if err := blocks.Put(key(b.Height), v); err != nil {
		return err
	}
	return index.Put(b.Hash[:], key(b.Height))
}

// decode decodes the block stored under key k. A block that does not
// decode, does not match its hash or is not the block of its height means
// damage.
func decode(k, v []byte, b *Block) error {
	if len(k) != 8 {
		return boltfile.Damage(nil, "a block is filed under a %d-byte key", len(k))
	}
	height := binary.BigEndian.Uint64(k)
	if err := json.Unmarshal(v, b); err != nil {
		return boltfile.Damage(err, "block %d does not decode", height)
	}
	if b.ComputeHash() != b.Hash {
		return boltfile.Damage(nil, "block %d does not match its hash", height)
	}
	if b.Height != height {
		return boltfile.Damage(nil, "block %d is filed under height %d", b.Height, height)
	}
	return nil
}

// Close closes the database and wakes every follower, which then returns
// ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.newTip)
	s.mu.Unlock()
	return s.db.Close()
}

// Err returns the *DamagedError found in the database, or nil.
func (s *Store) Err() error { return s.db.Err() }

// Tip returns the last block of the chain.
func (s *Store) Tip() Block {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tip
}

// BlockAt returns the block at height.
func (s *Store) BlockAt(height uint64) (Block, error) {
	var b Block
	tip := s.Tip().Height
	err := s.view(func(tx *bolt.Tx) error {
		blocks, _, err := buckets(tx)
		if err != nil {
			return err
		}
		k := key(height)
		v := blocks.Get(k)
		switch {
		case v == nil && height <= tip:
			return boltfile.Damage(nil, "block %d is missing", height)
		case v == nil:
			return fmt.Errorf("%w at height %d", ErrNotFound, height)
		}
		return decode(k, v, &b)
	})
	return b, err
}

// BlockByHash returns the block with hash h.
func (s *Store) BlockByHash(h Hash) (Block, error) {
	var b Block
	err := s.view(func(tx *bolt.Tx) error {
		blocks, index, err := buckets(tx)
		if err != nil {
			return err
		}
		k := index.Get(h[:])
		if k == nil {
			return fmt.Errorf("%w with hash %s", ErrNotFound, h)
		}
		v := blocks.Get(k)
		if v == nil {
			return boltfile.Damage(nil, "the index names a missing block for hash %s", h)
		}
		if err := decode(k, v, &b); err != nil {
			return err
		}
		if b.Hash != h {
			return boltfile.Damage(nil, "the index names block %d for hash %s", b.Height, h)
		}
		return nil
	})
	return b, err
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, boltfile.ErrClosed) {
		return ErrClosed
	}
	return err
}

// Append adds a block on top of the tip paying payouts, durably, and
// returns it. A payout with an empty address is left out.
func (s *Store) Append(t time.Time, payouts []Payout) (Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Block{}, ErrClosed
	}
	b := Block{Height: s.tip.Height + 1, Parent: s.tip.Hash, Time: t}
	for _, p := range payouts {
		if p.Address != "" {
			b.Payouts = append(b.Payouts, p)
		}
	}
	b.Hash = b.ComputeHash()
	// Holding mu across the write serialises appends; readers use bbolt's
	// own concurrency and never need mu for long.
	if err := s.db.Update(func(tx *bolt.Tx) error { return put(tx, &b) }); err != nil {
		if errors.Is(err, ErrDamaged) {
			// Followers waiting for a block learn of the damage instead.
			close(s.newTip)
			s.newTip = make(chan struct{})
			return Block{}, err
		}
		return Block{}, fmt.Errorf("chain: append block %d: %w", b.Height, err)
	}
	s.tip = b
	close(s.newTip)
	s.newTip = make(chan struct{})
	return b, nil
}

// Follow calls fn with every block from height from on, in order, each
// call after the previous one has returned: first the blocks already in
// the chain, then each new one as it is appended. It returns when fn
// fails (with fn's error), when ctx ends, when the store closes
// (ErrClosed), or when damage is found (a *DamagedError).
func (s *Store) Follow(ctx context.Context, from uint64, fn func(context.Context, Block) error) error {
	next := from
	for {
		s.mu.Lock()
		tip, wake, closed := s.tip.Height, s.newTip, s.closed
		s.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if err := s.db.Err(); err != nil {
			return err
		}
		if next > tip {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		b, err := s.BlockAt(next)
		if err != nil {
			return err
		}
		if err := fn(ctx, b); err != nil {
			return err
		}
		next++
	}
}
