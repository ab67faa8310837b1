package boltfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestDamagePassingTheCheckIsHarmless damages copies of a database at
// random, aiming at the pages it uses: whatever passes the check, bbolt
// must read in full and write to without a panic or a fault, and what it
// writes must pass the check again. (Damage to values, to free pages or to
// the unused end of a page passes, and is harmless to bbolt.)
func TestDamagePassingTheCheckIsHarmless(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig")
	randomDB(t, rng, orig, 25, nil)
	good, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Inspect(orig)
	if err != nil {
		t.Fatal(err)
	}
	// 300 rounds run in about a second; 18,000 (30 seeds) have passed.
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	caught, passed := map[string]int{}, map[string]int{}
	path := filepath.Join(dir, "copy")
	for range rounds {
		b := slices.Clone(good)
		kind, what := damage(rng, &b, l)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Check(path); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%s: the check could not read the copy: %v", what, err)
			}
			caught[kind]++
			continue
		}
		passed[kind]++
		if problem := exercise(path, rng); problem != "" {
			t.Errorf("%s passed the check, but %s", what, problem)
			continue
		}
		if err := Check(path); err != nil {
			t.Errorf("%s passed the check, but after bbolt wrote to it: %v", what, err)
		}
	}
	t.Logf("caught by the check: %v; passed (harmless): %v", caught, passed)
}

// damage changes *b, a copy of a file whose layout is l, in one of several
// ways, and says which kind and what it did.
func damage(rng *rand.Rand, b *[]byte, l *Layout) (kind, what string) {
	ps := l.PageSize
	pages := []uint64{0, 1, l.Freelist}
	for _, p := range l.Pages {
		pages = append(pages, p.ID, p.ID) // twice: the trees matter most
	}
	pages = append(pages, l.Free...)
	id := pages[rng.IntN(len(pages))]
	page := (*b)[int(id)*ps : int(id+1)*ps]
	switch rng.IntN(7) {
	case 0:
		n := 1 + rng.IntN(4)
		for range n {
			page[rng.IntN(ps)] ^= 1 << rng.IntN(8)
		}
		return "bit flips", fmt.Sprintf("%d bit flips in page %d", n, id)
	case 1:
		// A field of the header or of an element, set to a value that
		// damage might well leave there.
		count := int(binary.NativeEndian.Uint16(page[10:]))
		end := min(pageHeaderSize+count*elementSize, ps)
		width := []int{2, 4, 8}[rng.IntN(3)]
		off := rng.IntN(end/width) * width
		v := []uint64{0, 1, 2, id, l.HighWater - 1, l.HighWater, uint64(ps), 0xFFFF, 1 << 31, ^uint64(0), rng.Uint64()}[rng.IntN(11)]
		switch width {
		case 2:
			binary.NativeEndian.PutUint16(page[off:], uint16(v))
		case 4:
			binary.NativeEndian.PutUint32(page[off:], uint32(v))
		case 8:
			binary.NativeEndian.PutUint64(page[off:], v)
		}
		return "field", fmt.Sprintf("the %d-byte field at %d of page %d set to %#x", width, off, id, v)
	case 2:
		clear(page)
		return "zeroed page", fmt.Sprintf("page %d zeroed", id)
	case 3:
		other := pages[rng.IntN(len(pages))]
		copy(page, (*b)[int(other)*ps:int(other+1)*ps])
		return "copied page", fmt.Sprintf("page %d copied over page %d", other, id)
	case 4:
		for i := range page {
			page[i] = byte(rng.Uint32())
		}
		return "garbage page", fmt.Sprintf("page %d filled with garbage", id)
	case 5:
		// Garbage after a sound header, so that the page is read.
		for i := pageHeaderSize; i < ps; i++ {
			page[i] = byte(rng.Uint32())
		}
		return "garbage body", fmt.Sprintf("page %d's body filled with garbage", id)
	default:
		n := rng.IntN(len(*b))
		*b = (*b)[:n]
		return "truncated", fmt.Sprintf("the file cut to %d bytes", n)
	}
}

// exercise reads every bucket, key and value of the database at path with
// bbolt, then changes each bucket, and reports anything that went wrong.
func exercise(path string, rng *rand.Rand) (problem string) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	var f *os.File
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
		var err error
		f, err = os.OpenFile(name, flag, mode)
		return f, err
	}})
	if err != nil {
		return fmt.Sprintf("bbolt could not open it: %v", err)
	}
	defer func() {
		if r := recover(); r != nil {
			problem = fmt.Sprintf("bbolt panicked: %v\n%s", r, debug.Stack())
			_ = release(f) // bbolt's locks may be held
			return
		}
		_ = db.Close()
	}()
	var walk func(b *bolt.Bucket, write bool) error
	walk = func(b *bolt.Bucket, write bool) error {
		var subs [][]byte
		var keys [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if v == nil {
				subs = append(subs, bytes.Clone(k))
			} else {
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range subs {
			if err := walk(b.Bucket(k), write); err != nil {
				return err
			}
		}
		if !write {
			return nil
		}
		for _, k := range keys {
			if rng.IntN(4) == 0 {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		for range 5 {
			if err := b.Put(binary.BigEndian.AppendUint32(nil, rng.Uint32N(20000)), make([]byte, rng.IntN(500))); err != nil {
				return err
			}
		}
		return nil
	}
	for _, write := range []bool{false, true} {
		fn := db.View
		if write {
			fn = db.Update
		}
		err := fn(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				if b == nil { // a key that is not a bucket
					return nil
				}
				return walk(b, write)
			})
		})
		if err != nil {
			return fmt.Sprintf("bbolt failed: %v", err)
		}
	}
	return ""
}
