package boltfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if path := os.Getenv("BOLTFILE_BBOLT_CHECK"); path != "" {
		bboltCheckHelper(path)
	}
	goleak.VerifyTestMain(m)
}

// randomDB changes the database at path with random work of the kinds
// bbolt's format has: nested buckets (inline while small), values large
// enough to overflow a page, deletions that free and merge pages, and
// deleted buckets. Each of n transactions is committed.
func randomDB(t testing.TB, rng *rand.Rand, path string, n int, opts *bolt.Options) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("nested")}
	for range n {
		err := db.Update(func(tx *bolt.Tx) error {
			for range 1 + rng.IntN(100) {
				top := names[rng.IntN(len(names))]
				b, err := tx.CreateBucketIfNotExists(top)
				if err != nil {
					return err
				}
				if bytes.Equal(top, []byte("nested")) {
					if b, err = b.CreateBucketIfNotExists(fmt.Appendf(nil, "sub%d", rng.IntN(6))); err != nil {
						return err
					}
				}
				switch op := rng.IntN(1000); {
				case op < 800:
					k := binary.BigEndian.AppendUint32(nil, rng.Uint32N(20000))
					v := make([]byte, rng.IntN(300))
					if rng.IntN(50) == 0 {
						v = make([]byte, 5000+rng.IntN(20000)) // overflows
					}
					if err := b.Put(k, v); err != nil {
						return err
					}
				case op < 999:
					c := b.Cursor()
					k, _ := c.Seek(binary.BigEndian.AppendUint32(nil, rng.Uint32N(20000)))
					for i := 0; k != nil && i < rng.IntN(8); i++ {
						if err := c.Delete(); err != nil && !errors.Is(err, berrors.ErrIncompatibleValue) {
							return err
						}
						k, _ = c.Next()
					}
				default:
					if err := tx.DeleteBucket(top); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// bboltCheck runs bbolt's own check; only for files known to be sound.
func bboltCheck(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			// See TestLeakedPagesAreNotDamage.
			if first == nil && !strings.Contains(err.Error(), "unreachable unfreed") {
				first = err
			}
		}
		return first
	})
	if err != nil {
		t.Fatalf("bbolt's check: %v", err)
	}
}

// TestSoundFilesPass: files bbolt wrote pass, after every kind of work,
// with the free list kept in the file or not, whatever the page size.
func TestSoundFilesPass(t *testing.T) {
	for name, opts := range map[string]*bolt.Options{
		"defaults":         nil,
		"NoFreelistSync":   {NoFreelistSync: true},
		"PageSize1024":     {PageSize: 1024},
		"PageSize16384Map": {PageSize: 16384, FreelistType: bolt.FreelistMapType},
	} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			path := filepath.Join(t.TempDir(), "db")
			for round := range 12 {
				randomDB(t, rng, path, 10, opts)
				bboltCheck(t, path)
				l, err := Inspect(path)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if opts != nil && opts.PageSize != 0 && l.PageSize != opts.PageSize {
					t.Fatalf("page size %d, want %d", l.PageSize, opts.PageSize)
				}
				if round == 11 && testing.Verbose() {
					var branches, overflows, depth int
					for _, p := range l.Pages {
						if p.Branch {
							branches++
						}
						if p.Overflow > 0 {
							overflows++
						}
						depth = max(depth, p.Depth)
					}
					t.Logf("%d pages in use (%d branch pages, %d with overflow, depth %d), %d free, %d leaked", len(l.Pages), branches, overflows, depth, len(l.Free), len(l.Leaked))
				}
			}
		})
	}
}

// TestLeakedPagesAreNotDamage: bbolt 1.5.0 leaves a page neither in use
// nor free after this sequence (found by random search); its own Tx.Check
// calls that "unreachable unfreed". bbolt never touches such a page again,
// so the check must let the file pass.
func TestLeakedPagesAreNotDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	key := 0
	put := func(tx *bolt.Tx, sub string, n int) error {
		b, err := tx.CreateBucketIfNotExists([]byte("nested"))
		if err != nil {
			return err
		}
		if b, err = b.CreateBucketIfNotExists([]byte(sub)); err != nil {
			return err
		}
		for range n {
			key++
			if err := b.Put(binary.BigEndian.AppendUint32(nil, uint32(key)), make([]byte, 50)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, fn := range []func(*bolt.Tx) error{
		func(tx *bolt.Tx) error { return put(tx, "sub2", 2) },
		func(tx *bolt.Tx) error { return put(tx, "sub2", 2) },
		func(tx *bolt.Tx) error {
			if err := put(tx, "sub", 20); err != nil {
				return err
			}
			return tx.DeleteBucket([]byte("nested"))
		},
	} {
		if err := db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Leaked) == 0 {
		t.Log("bbolt no longer leaks a page here")
	}
	bboltCheck(t, path)
}
