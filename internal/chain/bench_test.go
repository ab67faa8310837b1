package chain

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile"
)

// buildChain makes a chain database of n blocks at path as Open and
// Append do, one block per transaction so that the pages are laid out as
// Append lays them out, but without waiting for the disk each time.
func buildChain(tb testing.TB, path string, n int) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Update(createChain); err != nil {
		tb.Fatal(err)
	}
	var tip Block
	if err := db.View(func(tx *bolt.Tx) error { return readTip(tx, &tip) }); err != nil {
		tb.Fatal(err)
	}
	for i := 1; i < n; i++ {
		b := Block{Height: tip.Height + 1, Parent: tip.Hash, Time: tip.Time.Add(time.Minute), Payouts: []Payout{{Address: fmt.Sprintf("mp1%040x", i), Amount: Reward}}}
		b.Hash = b.ComputeHash()
		if err := db.Update(func(tx *bolt.Tx) error { return put(tx, &b) }); err != nil {
			tb.Fatal(err)
		}
		tip = b
	}
	if err := db.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
}

// evict drops the file from the page cache, so that the next read comes
// from the disk (as far as the machine lets it: a VM's host may cache).
func evict(tb testing.TB, path string) {
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkOpen measures what checking the file costs at start-up, for a
// chain of 100,000 blocks: the check alone (boltfile.Check), Open (the
// check, bbolt's open and the tip), bbolt's open and the tip with no
// check, and bbolt's own Tx.Check, each with the file in the page cache
// (warm) and evicted (cold). The figures are in boltfile.Open's comment.
//
//	go test -run '^$' -bench Open -benchtime 5x ./internal/chain
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "chain.db")
	start := time.Now()
	buildChain(b, path, 100_000)
	l, err := boltfile.Inspect(path)
	if err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("100,000 blocks built in %v: %d bytes, %d pages of %d bytes in use (%d free, %d leaked)",
		time.Since(start).Round(time.Millisecond), fi.Size(), len(l.Pages), l.PageSize, len(l.Free), len(l.Leaked))

	for _, m := range []struct {
		name string
		run  func(b *testing.B)
	}{
		{"check", func(b *testing.B) {
			if err := boltfile.Check(path); err != nil {
				b.Fatal(err)
			}
		}},
		{"Open", func(b *testing.B) {
			s, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}},
		{"bboltOpenNoCheck", func(b *testing.B) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			var tip Block
			if err := db.View(func(tx *bolt.Tx) error { return readTip(tx, &tip) }); err != nil {
				b.Fatal(err)
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		}},
		{"bboltTxCheck", func(b *testing.B) {
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			err = db.View(func(tx *bolt.Tx) error {
				var first error
				for err := range tx.Check() {
					first = err
				}
				return first
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		for _, cold := range []bool{false, true} {
			name := m.name + "/warm"
			if cold {
				name = m.name + "/cold"
			}
			b.Run(name, func(b *testing.B) {
				m.run(b) // warms the cache, and the code
				for b.Loop() {
					if cold {
						b.StopTimer()
						evict(b, path)
						b.StartTimer()
					}
					m.run(b)
				}
			})
		}
	}
}
