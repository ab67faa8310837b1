package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile/bolttest"
)

var (
	pristineOnce sync.Once
	pristineDir  string
	pristineErr  error
)

// pristine returns a chain database of 200 blocks made with Open and
// Append and closed, made once for all tests; copy it before use.
func pristine(t *testing.T) string {
	t.Helper()
	pristineOnce.Do(func() {
		if pristineDir, pristineErr = os.MkdirTemp("", "chaintest"); pristineErr != nil {
			return
		}
		s, err := Open(filepath.Join(pristineDir, "chain.db"))
		if err != nil {
			pristineErr = err
			return
		}
		for i := range 200 {
			if _, err := s.Append(time.Unix(1700000000+int64(i), 0), []Payout{{Address: fmt.Sprintf("mp1%040x", i), Amount: Reward}}); err != nil {
				pristineErr = err
				break
			}
		}
		if err := s.Close(); pristineErr == nil {
			pristineErr = err
		}
	})
	if pristineErr != nil {
		t.Fatal(pristineErr)
	}
	return filepath.Join(pristineDir, "chain.db")
}

// wantDamaged fails unless err is the store's damage error for path.
func wantDamaged(t *testing.T, err error, path string) {
	t.Helper()
	var de *DamagedError
	if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) || de.Path != path || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want a *DamagedError naming %s", err, path)
	}
}

// use opens the chain at path and uses all of it: every block by height
// and by hash, an append, a follower. It returns the first error; an
// error from a method is checked to be what every later call returns.
func use(t *testing.T, path string) error {
	s, err := Open(path)
	if err != nil {
		return err
	}
	defer s.Close()
	sticky := func(err error) error {
		if errors.Is(err, ErrDamaged) {
			if s.Err() != err {
				t.Errorf("Err() = %v after %v", s.Err(), err)
			}
			if _, err2 := s.BlockAt(0); err2 != err {
				t.Errorf("a later BlockAt: %v, want the same %v", err2, err)
			}
			if _, err2 := s.Append(time.Now(), nil); err2 != err {
				t.Errorf("a later Append: %v, want the same %v", err2, err)
			}
			if err2 := s.Follow(context.Background(), 0, func(context.Context, Block) error { return nil }); err2 != err {
				t.Errorf("a later Follow: %v, want the same %v", err2, err)
			}
		}
		return err
	}
	tip := s.Tip()
	for h := range tip.Height + 1 {
		b, err := s.BlockAt(h)
		if err != nil {
			return sticky(err)
		}
		if _, err := s.BlockByHash(b.Hash); err != nil {
			return sticky(err)
		}
	}
	if _, err := s.Append(time.Now(), []Payout{{Address: "a", Amount: 1}}); err != nil {
		return sticky(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := uint64(0)
	err = s.Follow(ctx, 0, func(context.Context, Block) error {
		if n++; n > tip.Height+1 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		return sticky(err)
	}
	return nil
}

// TestDamagedCopies damages copies of a real chain database in many ways;
// opening and using each ends in the damage error naming the file, and
// nothing panics.
func TestDamagedCopies(t *testing.T) {
	src := pristine(t)
	for _, c := range []struct {
		name   string
		damage func(f *bolttest.File)
		want   string // in the message
	}{
		{"zeroed leaf page", func(f *bolttest.File) {
			f.Zero(f.Page("blocks", false, 10))
		}, "says it is page 0"},
		{"bytes flipped in the middle of a page's entries", func(f *bolttest.File) {
			f.Edit(f.Page("blocks", false, 12), func(p []byte) {
				for i := bolttest.Header + 2*bolttest.Element; i < bolttest.Header+3*bolttest.Element; i++ {
					p[i] ^= 0x5a
				}
			})
		}, "page"},
		{"a byte flipped in a block", func(f *bolttest.File) {
			f.Edit(f.Page("blocks", false, 12), func(p []byte) {
				off, n := bolttest.Value(p, 1)
				p[off+n/2] ^= 0x01
			})
		}, "block"},
		{"a byte flipped in an index key", func(f *bolttest.File) {
			// A branch key: its order holds, its link to the child breaks.
			f.Edit(f.Page("index", true, 0), func(p []byte) {
				off, n := bolttest.Key(p, 1)
				p[off+n-1] ^= 0x01
			})
		}, "first key differs"},
		{"an empty key", func(f *bolttest.File) {
			f.Edit(f.Page("blocks", false, 3), func(p []byte) {
				bolttest.SetField(p, bolttest.Header+bolttest.Element+8, uint32(0)) // element 1's ksize
			})
		}, "empty"},
		{"a branch page that names itself", func(f *bolttest.File) {
			id := f.Page("blocks", true, 0)
			f.Edit(id, func(p []byte) { bolttest.SetField(p, bolttest.Header+bolttest.Element+8, id) })
		}, "in use twice"},
		{"garbage in a branch page", func(f *bolttest.File) {
			f.Garbage(f.Page("blocks", true, 0), bolttest.Header)
		}, "page"},
		{"garbage in the free list", func(f *bolttest.File) {
			f.Garbage(f.Layout.Freelist, bolttest.Header)
		}, "free list"},
		{"a page in use listed as free", func(f *bolttest.File) {
			f.ListFree(f.Page("blocks", false, 5))
		}, "listed as free"},
		{"both header pages overwritten", func(f *bolttest.File) {
			f.Garbage(0, 0)
			f.Garbage(1, 0)
		}, "neither of its two header pages"},
		{"header page 0 zeroed", func(f *bolttest.File) {
			f.Zero(0)
		}, "header page 0 is overwritten"},
		{"cut in half", func(f *bolttest.File) {
			f.Truncate(int64(f.Layout.HighWater) * int64(f.PageSize()) / 2)
		}, "cut short"},
		{"cut to nothing", func(f *bolttest.File) {
			f.Truncate(0)
		}, "empty"},
		{"not a chain", func(f *bolttest.File) {
			db, err := bolt.Open(f.Path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketIndex) }); err != nil {
				t.Fatal(err)
			}
		}, "missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := bolttest.Copy(t, src, filepath.Join(t.TempDir(), "chain.db"))
			c.damage(f)
			err := use(t, f.Path)
			wantDamaged(t, err, f.Path)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want it to mention %q", err, c.want)
			}
			t.Log(err)
		})
	}
	t.Run("undamaged", func(t *testing.T) {
		f := bolttest.Copy(t, src, filepath.Join(t.TempDir(), "chain.db"))
		if err := use(t, f.Path); err != nil {
			t.Fatal(err)
		}
		s, err := Open(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if tip := s.Tip(); tip.Height != 201 {
			t.Fatalf("tip after use and reopening: %d, want 201", tip.Height)
		}
	})
}

// TestDamageWhileOpen: damage made under an open store (by another
// program, or the disk) is found by the call that meets it, and every
// call after returns the same error, a follower included.
func TestDamageWhileOpen(t *testing.T) {
	f := bolttest.Copy(t, pristine(t), filepath.Join(t.TempDir(), "chain.db"))
	s, err := Open(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	followed := make(chan error, 1)
	go func() {
		followed <- s.Follow(context.Background(), s.Tip().Height+1, func(context.Context, Block) error { return nil })
	}()
	f.Zero(f.Page("blocks", false, 0))
	_, err = s.BlockAt(1)
	wantDamaged(t, err, f.Path)
	t.Log(err)
	if _, err2 := s.Append(time.Now(), nil); err2 != err {
		t.Fatalf("Append after damage: %v, want %v", err2, err)
	}
	select {
	case err2 := <-followed:
		if err2 != err {
			t.Fatalf("the follower ended with %v, want %v", err2, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower still waits after damage")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
