package boltfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fill makes a bucket "b" with enough keys for several leaf pages under a
// branch page.
func fill(tx *bolt.Tx) error {
	b, err := tx.CreateBucket([]byte("b"))
	if err != nil {
		return err
	}
	for i := range 500 {
		if err := b.Put(binary.BigEndian.AppendUint32(nil, uint32(i)), make([]byte, 100)); err != nil {
			return err
		}
	}
	return nil
}

func readAll(tx *bolt.Tx) error {
	return tx.Bucket([]byte("b")).ForEach(func(k, v []byte) error { return nil })
}

func created(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	d, err := Create(path, Options{}, fill)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// overwrite writes b at off through a descriptor of its own, as another
// program damaging the file would.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCreateAndOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	if _, err := Open(path, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing file: %v, want fs.ErrNotExist", err)
	}
	d, err := Create(path, Options{}, fill)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := Create(path, Options{}, fill); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	start := time.Now()
	if _, err := Open(path, Options{Timeout: 100 * time.Millisecond}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open of a file in use: %v, want ErrInUse", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("ErrInUse after %v, want after the 100ms timeout", d)
	}
	if err := d.View(readAll); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.View(readAll); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("the folder holds %v (%v), want only the database", entries, err)
	}
	if d, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.View(readAll); err != nil {
		t.Fatal(err)
	}
}

// TestCreateLeavesNothingOnFailure: a failed first transaction leaves no
// file, under the name or beside it.
func TestCreateLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("boom")
	if _, err := Create(filepath.Join(dir, "db"), Options{}, func(*bolt.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Create: %v, want boom", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the folder holds %v after a failed Create", entries)
	}
}

// damagedErr is a store's own error type, made by Options.Damaged.
type damagedErr struct{ e *Error }

func (d *damagedErr) Error() string { return "store: " + d.e.Error() }

// TestDamageFoundLaterIsSticky: damage made while the file is open (by
// another program) makes bbolt panic or fault; each becomes the one error
// that every later call returns without running its function, and Close
// does not hang.
func TestDamageFoundLaterIsSticky(t *testing.T) {
	for name, damage := range map[string]func(t *testing.T, path string, l *Layout){
		"zeroed leaf": func(t *testing.T, path string, l *Layout) {
			for _, p := range l.Pages {
				if p.Bucket == "b" && !p.Branch {
					overwrite(t, path, int64(p.ID)*int64(l.PageSize), make([]byte, l.PageSize))
					return
				}
			}
			t.Fatal("no leaf page in bucket b")
		},
		"branch names a page past the end": func(t *testing.T, path string, l *Layout) {
			for _, p := range l.Pages {
				if p.Bucket == "b" && p.Branch {
					// Element 0's page id: far past the map.
					overwrite(t, path, int64(p.ID)*int64(l.PageSize)+pageHeaderSize+8, binary.NativeEndian.AppendUint64(nil, 1<<34))
					return
				}
			}
			t.Fatal("no branch page in bucket b")
		},
		"file cut short": func(t *testing.T, path string, l *Layout) {
			// bbolt's map still covers the pages, but they are gone:
			// reading them faults (SIGBUS).
			if err := os.Truncate(path, int64(2*l.PageSize)); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := created(t)
			l, err := Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Open(path, Options{Damaged: func(e *Error) error { return &damagedErr{e} }})
			if err != nil {
				t.Fatal(err)
			}
			damage(t, path, l)
			err = d.View(readAll)
			var de *damagedErr
			if !errors.As(err, &de) || de.e.Path != path {
				t.Fatalf("View of the damaged file: %v, want a damagedErr for %s", err, path)
			}
			t.Logf("%v", err)
			if d.Err() != err {
				t.Fatalf("Err() = %v, want %v", d.Err(), err)
			}
			called := false
			for _, call := range []func(func(*bolt.Tx) error) error{d.View, d.Update} {
				if err2 := call(func(*bolt.Tx) error { called = true; return nil }); err2 != err {
					t.Fatalf("a later call: %v, want the same error %v", err2, err)
				}
			}
			if called {
				t.Fatal("a later call ran its function on the damaged file")
			}
			closed := make(chan error, 1)
			go func() { closed <- d.Close() }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after damage")
			}
		})
	}
}

// TestDamageReturnedIsSticky: a transaction function that returns Damage
// (wrapped or not) marks the file damaged.
func TestDamageReturnedIsSticky(t *testing.T) {
	d, err := Open(created(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.View(func(*bolt.Tx) error { return errors.New("not damage") }); err == nil || d.Err() != nil {
		t.Fatalf("a plain error: %v, Err() = %v; want it returned, and no damage", err, d.Err())
	}
	err = d.Update(func(*bolt.Tx) error { return fmt.Errorf("decode: %w", Damage(nil, "record 7 does not decode")) })
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "record 7 does not decode") || d.Err() != err {
		t.Fatalf("Update returning Damage: %v (Err() = %v)", err, d.Err())
	}
}

// TestBboltCheckFaultsWhereOursReports shows why the check is our own:
// on a branch key that points outside its page, bbolt's Tx.Check reads
// outside its map from a goroutine of its own, and the process dies.
func TestBboltCheckFaultsWhereOursReports(t *testing.T) {
	path := created(t)
	l, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Pages {
		if p.Branch {
			// Element 1's key offset (pos), relative to the element.
			overwrite(t, path, int64(p.ID)*int64(l.PageSize)+pageHeaderSize+elementSize, binary.NativeEndian.AppendUint32(nil, 1<<30))
			break
		}
	}
	if err := Check(path); err == nil || !strings.Contains(err.Error(), "lies outside the page") {
		t.Fatalf("our check: %v, want an entry outside the page", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BOLTFILE_BBOLT_CHECK="+path)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "fatal error: fault") {
		t.Fatalf("bbolt's Check on the same file: %v\n%.2000s\nIf bbolt's Check no longer dies here, see whether it can replace ours (doc.go).", err, out)
	}
}

// bboltCheckHelper runs bbolt's Check on the file named by the
// environment, in a process of its own (see TestMain).
func bboltCheckHelper(path string) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			fmt.Println(err)
		}
		return nil
	})
	os.Exit(0)
}
