package chain

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
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
)

var (
	bucketBlocks = []byte("blocks") // height (8 bytes, big-endian) -> JSON block
	bucketIndex  = []byte("index")  // hash -> height
)

// Store is the chain in a bbolt database. Its methods are safe for
// concurrent use. Appends are serialised and each is durable when it
// returns.
type Store struct {
	db *bolt.DB

	mu     sync.Mutex
	tip    Block
	closed bool
	// newTip is closed and replaced whenever the tip moves or the store
	// closes; followers wait on it.
	newTip chan struct{}
}

// Open opens the chain database at path, creating it with a genesis block
// when it does not exist.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: OpenTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("chain: open %s: %w", path, err)
	}
	s := &Store{db: db, newTip: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		blocks, err := tx.CreateBucketIfNotExists(bucketBlocks)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketIndex); err != nil {
			return err
		}
		k, v := blocks.Cursor().Last()
		if k == nil {
			genesis := Block{Time: time.Unix(1231006505, 0)}
			genesis.Hash = genesis.ComputeHash()
			s.tip = genesis
			return put(tx, &genesis)
		}
		return decode(v, &s.tip)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("chain: open %s: %w", path, err)
	}
	return s, nil
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
	if err := tx.Bucket(bucketBlocks).Put(key(b.Height), v); err != nil {
		return err
	}
	return tx.Bucket(bucketIndex).Put(b.Hash[:], key(b.Height))
}

func decode(v []byte, b *Block) error {
	if err := json.Unmarshal(v, b); err != nil {
		return fmt.Errorf("decode block: %w", err)
	}
	if b.ComputeHash() != b.Hash {
		return fmt.Errorf("block %d is corrupt: its hash does not match its contents", b.Height)
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

// Tip returns the last block of the chain.
func (s *Store) Tip() Block {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tip
}

// BlockAt returns the block at height.
func (s *Store) BlockAt(height uint64) (Block, error) {
	var b Block
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlocks).Get(key(height))
		if v == nil {
			return fmt.Errorf("%w at height %d", ErrNotFound, height)
		}
		return decode(v, &b)
	})
	return b, err
}

// BlockByHash returns the block with hash h.
func (s *Store) BlockByHash(h Hash) (Block, error) {
	var b Block
	err := s.view(func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketIndex).Get(h[:])
		if k == nil {
			return fmt.Errorf("%w with hash %s", ErrNotFound, h)
		}
		v := tx.Bucket(bucketBlocks).Get(k)
		if v == nil {
			return fmt.Errorf("%w with hash %s", ErrNotFound, h)
		}
		return decode(v, &b)
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
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
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
// fails (with fn's error), when ctx ends, or when the store closes
// (ErrClosed).
func (s *Store) Follow(ctx context.Context, from uint64, fn func(context.Context, Block) error) error {
	next := from
	for {
		s.mu.Lock()
		tip, wake, closed := s.tip.Height, s.newTip, s.closed
		s.mu.Unlock()
		if closed {
			return ErrClosed
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
