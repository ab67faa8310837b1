package walletdb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile/bolttest"
)

var (
	pristineOnce sync.Once
	pristineDir  string
	pristineErr  error
)

// block returns the block that follows st, paying amount to addr.
func block(st State, addr string, amount int64) chain.Block {
	b := chain.Block{Height: st.Next, Parent: st.LastHash, Time: time.Unix(1700000000+int64(st.Next), 0), Payouts: []chain.Payout{{Address: addr, Amount: amount}, {Address: "someone else", Amount: 5}}}
	b.Hash = b.ComputeHash()
	return b
}

// pristine returns a wallet database made with Create, NewAddress and
// ApplyBlock (150 blocks, each paying the wallet) and closed, made once
// for all tests; copy it before use.
func pristine(t *testing.T) string {
	t.Helper()
	pristineOnce.Do(func() {
		if pristineDir, pristineErr = os.MkdirTemp("", "wallettest"); pristineErr != nil {
			return
		}
		w, err := Create(filepath.Join(pristineDir, "w.db"))
		if err != nil {
			pristineErr = err
			return
		}
		defer func() {
			if err := w.Close(); pristineErr == nil {
				pristineErr = err
			}
		}()
		var addrs []string
		for range 3 {
			a, err := w.NewAddress()
			if err != nil {
				pristineErr = err
				return
			}
			addrs = append(addrs, a)
		}
		for i := range 150 {
			if _, err := w.ApplyBlock(block(w.State(), addrs[i%3], int64(1000+i))); err != nil {
				pristineErr = err
				return
			}
		}
	})
	if pristineErr != nil {
		t.Fatal(pristineErr)
	}
	return filepath.Join(pristineDir, "w.db")
}

func wantDamaged(t *testing.T, err error, path string) {
	t.Helper()
	var de *DamagedError
	if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) || de.Path != path || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want a *DamagedError naming %s", err, path)
	}
}

// use opens the wallet at path and uses all of it: its payouts, its
// balance at each height, a new address, the next block. It returns the
// first error; an error from a method is checked to be what every later
// call returns.
func use(t *testing.T, path string) error {
	w, err := Open(path)
	if err != nil {
		return err
	}
	defer w.Close()
	sticky := func(err error) error {
		if errors.Is(err, ErrDamaged) {
			if w.Err() != err {
				t.Errorf("Err() = %v after %v", w.Err(), err)
			}
			if _, err2 := w.Transactions(); err2 != err {
				t.Errorf("a later Transactions: %v, want the same %v", err2, err)
			}
			if _, err2 := w.NewAddress(); err2 != err {
				t.Errorf("a later NewAddress: %v, want the same %v", err2, err)
			}
			if _, err2 := w.ApplyBlock(block(w.State(), "x", 1)); err2 != err {
				t.Errorf("a later ApplyBlock: %v, want the same %v", err2, err)
			}
			if err2 := w.WaitApplied(context.Background(), w.State().Next); err2 != err {
				t.Errorf("a later WaitApplied: %v, want the same %v", err2, err)
			}
		}
		return err
	}
	st := w.State()
	if _, err := w.Transactions(); err != nil {
		return sticky(err)
	}
	for h := range st.Next {
		if _, err := w.BalanceAt(h); err != nil {
			return sticky(err)
		}
	}
	addr, err := w.NewAddress()
	if err != nil {
		return sticky(err)
	}
	if _, err := w.ApplyBlock(block(st, addr, 7)); err != nil {
		return sticky(err)
	}
	if err := w.WaitApplied(context.Background(), st.Next); err != nil {
		return sticky(err)
	}
	return nil
}

// TestDamagedCopies damages copies of a real wallet database in many
// ways; opening and using each ends in the damage error naming the file,
// and nothing panics.
func TestDamagedCopies(t *testing.T) {
	src := pristine(t)
	// The root bucket's leaf holds the small buckets inline: meta and
	// addresses.
	inline := func(f *bolttest.File, name string, fn func(p []byte, off int)) {
		id := f.Page("", false, 0)
		f.Edit(id, func(p []byte) {
			i := bytes.Index(p, []byte(name))
			if i < 0 {
				t.Fatalf("no bucket %q on page %d", name, id)
			}
			fn(p, i+len(name)+16) // past the key and the bucket header: the inline page
		})
	}
	for _, c := range []struct {
		name   string
		damage func(f *bolttest.File)
		want   string // in the message
	}{
		{"zeroed leaf page", func(f *bolttest.File) {
			f.Zero(f.Page("txs", false, 4))
		}, "says it is page 0"},
		{"bytes flipped in the middle of a page's entries", func(f *bolttest.File) {
			f.Edit(f.Page("txs", false, 6), func(p []byte) {
				for i := bolttest.Header + 2*bolttest.Element; i < bolttest.Header+3*bolttest.Element; i++ {
					p[i] ^= 0xa5
				}
			})
		}, "page"},
		{"a digit changed in a payout", func(f *bolttest.File) {
			f.Edit(f.Page("txs", false, 6), func(p []byte) {
				off, n := bolttest.Value(p, 1)
				v := p[off : off+n]
				i := bytes.Index(v, []byte(`"Amount":`)) + len(`"Amount":`)
				v[i] = '9' // the first digit: 1xxx becomes 9xxx
			})
		}, "add up"},
		{"a payout that no longer decodes", func(f *bolttest.File) {
			f.Edit(f.Page("txs", false, 6), func(p []byte) {
				off, _ := bolttest.Value(p, 2)
				p[off] = '['
			})
		}, "does not decode"},
		{"garbage in an inline bucket", func(f *bolttest.File) {
			inline(f, "addresses", func(p []byte, off int) {
				bolttest.SetField(p, off+bolttest.Header+4, uint32(5000)) // element 0's pos
			})
		}, "outside the page"},
		{"the last block's record damaged", func(f *bolttest.File) {
			inline(f, "meta", func(p []byte, off int) {
				i := bytes.Index(p[off:], []byte("lasthash"))
				p[off+i+7] = 'i' // "lasthasi": in order, but no longer the record
			})
		}, "last block"},
		{"an empty key", func(f *bolttest.File) {
			f.Edit(f.Page("txs", false, 2), func(p []byte) {
				bolttest.SetField(p, bolttest.Header+3*bolttest.Element+8, uint32(0)) // element 3's ksize
			})
		}, "empty"},
		{"a branch page that names itself", func(f *bolttest.File) {
			id := f.Page("txs", true, 0)
			f.Edit(id, func(p []byte) { bolttest.SetField(p, bolttest.Header+bolttest.Element+8, id) })
		}, "in use twice"},
		{"garbage in a branch page", func(f *bolttest.File) {
			f.Garbage(f.Page("txs", true, 0), bolttest.Header)
		}, "page"},
		{"garbage in the free list", func(f *bolttest.File) {
			f.Garbage(f.Layout.Freelist, bolttest.Header)
		}, "free list"},
		{"a page in use listed as free", func(f *bolttest.File) {
			f.ListFree(f.Page("txs", false, 3))
		}, "listed as free"},
		{"both header pages overwritten", func(f *bolttest.File) {
			f.Garbage(0, 0)
			f.Garbage(1, 0)
		}, "neither of its two header pages"},
		{"header page 1 zeroed", func(f *bolttest.File) {
			f.Zero(1)
		}, "header page 1 is overwritten"},
		{"cut short", func(f *bolttest.File) {
			f.Truncate(int64(3 * f.PageSize()))
		}, "cut short"},
		{"cut to nothing", func(f *bolttest.File) {
			f.Truncate(0)
		}, "empty"},
		{"not a wallet", func(f *bolttest.File) {
			db, err := bolt.Open(f.Path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketTxs) }); err != nil {
				t.Fatal(err)
			}
		}, "not a wallet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := bolttest.Copy(t, src, filepath.Join(t.TempDir(), "w.db"))
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
		f := bolttest.Copy(t, src, filepath.Join(t.TempDir(), "w.db"))
		if err := use(t, f.Path); err != nil {
			t.Fatal(err)
		}
		w, err := Open(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if st := w.State(); st.Next != 151 {
			t.Fatalf("next block after use and reopening: %d, want 151", st.Next)
		}
	})
}

// TestDamageWhileApplyingABlock is the failure this package had: the
// file damaged under an open wallet, found while a block is applied. The
// call returns the damage error naming the file; waiters and every later
// call get the same error.
func TestDamageWhileApplyingABlock(t *testing.T) {
	f := bolttest.Copy(t, pristine(t), filepath.Join(t.TempDir(), "w.db"))
	w, err := Open(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	txs, err := w.Transactions()
	if err != nil {
		t.Fatal(err)
	}
	st := w.State()
	waited := make(chan error, 1)
	go func() { waited <- w.WaitApplied(context.Background(), st.Next) }()
	// The last leaf of txs, where the next payout goes.
	var last uint64
	for _, p := range f.Layout.Pages {
		if p.Bucket == "txs" && !p.Branch {
			last = p.ID
		}
	}
	f.Zero(last)
	_, err = w.ApplyBlock(block(st, txs[0].Address, 7))
	wantDamaged(t, err, f.Path)
	t.Log(err)
	select {
	case err2 := <-waited:
		if err2 != err {
			t.Fatalf("WaitApplied ended with %v, want %v", err2, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitApplied still waits after damage")
	}
	if _, err2 := w.ApplyBlock(block(st, txs[0].Address, 7)); err2 != err {
		t.Fatalf("ApplyBlock again: %v, want %v", err2, err)
	}
	if w.State() != st {
		t.Fatalf("state moved to %+v on a failed block", w.State())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCreateIsAtomic: Create leaves nothing beside the wallet, and a file
// that exists is never replaced.
func TestCreateIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an empty file: %v, want ErrExists", err)
	}
	_, err := Open(path)
	wantDamaged(t, err, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the folder holds %v, want only the wallet", entries)
	}
}
