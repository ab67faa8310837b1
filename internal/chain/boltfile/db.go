package boltfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

var (
	// ErrInUse is returned by Open when another process holds the file.
	ErrInUse = errors.New("boltfile: in use by another process")
	// ErrClosed is returned by calls on a closed DB.
	ErrClosed = errors.New("boltfile: closed")
)

// Options are how to open a file. The zero value works.
type Options struct {
	// Timeout is how long Open waits for another process to let go of
	// the file before it returns ErrInUse; 0 means not at all.
	Timeout time.Duration
	// Damaged turns what was found wrong with the file (Path set) into the
	// error that Open, and every call after damage is found, returns. Nil
	// returns the *Error itself.
	Damaged func(*Error) error
}

func (o *Options) damaged(path string, e *Error) error {
	e.Path = path
	if o.Damaged == nil {
		return e
	}
	return o.Damaged(e)
}

// DB is an open bbolt database whose transactions are guarded: a panic or
// a memory fault inside bbolt, or an *Error returned by a transaction
// function, marks the file damaged, and from then on every call returns
// that one error without touching the file.
type DB struct {
	path    string
	bolt    *bolt.DB
	file    *os.File // the file bbolt opened; closed directly if bbolt's locks are stuck
	damaged func(*Error) error

	mu     sync.Mutex
	err    error // the damage found first
	stuck  bool  // a transaction could not be ended, so bbolt's locks may be held for good
	closed bool
}

// Open opens the existing database at path: it takes the file's lock
// (waiting up to o.Timeout, then ErrInUse), checks the whole file with
// Check while holding it, and only then lets bbolt map it. A missing file
// is an error for which errors.Is(err, fs.ErrNotExist) holds.
//
// What the check costs, measured by BenchmarkOpen in internal/chain for a
// chain of 100,000 blocks (a 94 MB file, 22,833 pages of 4 KiB in use),
// on a 2-core VM under load, with the file in the page cache (warm) or
// evicted from it (cold), the range of five runs:
//
//	the check alone          30-41 ms warm    59-125 ms cold
//	chain.Open in all        23-49 ms warm    38-110 ms cold
//	bbolt open, no check     0.06 ms warm     0.6-1.4 ms cold
//	bbolt's Tx.Check         25-36 ms warm    1.15-1.30 s cold
//
// A full walk it is, then: a few tens of milliseconds once per start is
// cheap for a daemon, and nothing cheaper finds what made bbolt panic in
// the field. A page both in use and listed as free ("page N already
// freed" when bbolt frees it again) shows only when every page in use is
// known; checking the meta pages and the free list alone (about a
// millisecond) would not see it, nor a bad page that bbolt would meet
// halfway through applying a block. bbolt's Tx.Check costs as much warm,
// far more cold (it faults its map in page by page; reads here are
// sequential enough for the kernel's read-ahead), and can kill the process
// on the damage it is meant to find (doc.go).
func Open(path string, o Options) (*DB, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := lock(f, o.Timeout); err != nil {
		_ = f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = check(f, fi.Size(), nil)
	}
	if err != nil {
		_ = f.Close()
		var e *Error
		if errors.As(err, &e) {
			return nil, o.damaged(path, e)
		}
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	return openBolt(path, path, f, o)
}

// Create makes a new database at path and runs init in its first
// transaction. It builds the file under a temporary name beside path
// (".NAME.new*", mode 0600) and links it into place only when it is
// complete and on disk, so that path never names a half-made database; a
// crash during Create can leave only the temporary file behind. If path
// exists, Create returns an error for which errors.Is(err, fs.ErrExist)
// holds.
func Create(path string, o Options, init func(*bolt.Tx) error) (*DB, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".new*")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := lock(f, 0); err != nil {
		_ = f.Close()
		return nil, err
	}
	d, err := openBolt(tmp, path, f, o)
	if err != nil {
		return nil, err
	}
	if err := d.Update(init); err != nil {
		_ = d.Close()
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		_ = d.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		_ = d.Close()
		_ = os.Remove(path)
		return nil, err
	}
	return d, nil
}

// openBolt opens bbolt on f, which is open and locked, under the name
// name; path is the name errors give.
func openBolt(name, path string, f *os.File, o Options) (d *DB, err error) {
	// bbolt's Open reads the meta pages and the free list through its map.
	// The check has been over both, but a fault or a panic here must not
	// end the process either.
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			_ = release(f)
			d, err = nil, o.damaged(path, panicked(r))
		}
	}()
	var first atomic.Pointer[os.File]
	first.Store(f)
	db, err := bolt.Open(name, 0o600, &bolt.Options{
		Timeout: o.Timeout,
		// bbolt's own open gets f, and locks it again, which on the same
		// open file succeeds. Later opens (Tx.WriteTo with a WriteFlag)
		// get files of their own, which they close.
		OpenFile: func(name string, flag int, mode fs.FileMode) (*os.File, error) {
			if f := first.Swap(nil); f != nil {
				return f, nil
			}
			return os.OpenFile(name, flag, mode)
		},
	})
	if err != nil { // bbolt has closed f
		if isDamage(err) {
			return nil, o.damaged(path, Damage(err, "%v", err))
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{path: path, bolt: db, file: f, damaged: o.Damaged}, nil
}

// isDamage reports whether bbolt's err says the file is damaged.
func isDamage(err error) bool {
	return errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch)
}

func lock(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err != unix.EWOULDBLOCK:
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		case !time.Now().Before(deadline):
			return fmt.Errorf("%w: %s", ErrInUse, f.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// release lets go of f's lock and closes it, for when bbolt cannot: the
// lock belongs to the open file, which bbolt's map keeps open after the
// descriptor is closed, so closing alone would keep the lock.
func release(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Err returns the damage found in the file, or nil.
func (d *DB) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// View runs fn in a read-only transaction.
func (d *DB) View(fn func(*bolt.Tx) error) error { return d.run(false, fn) }

// Update runs fn in a read-write transaction and commits it if fn
// returns nil.
func (d *DB) Update(fn func(*bolt.Tx) error) error { return d.run(true, fn) }

func (d *DB) run(writable bool, fn func(*bolt.Tx) error) (err error) {
	d.mu.Lock()
	err = d.err
	if err == nil && d.closed {
		err = ErrClosed
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}

	var tx *bolt.Tx
	// bbolt reads its file through a memory map: a page it follows outside
	// the file faults. SetPanicOnFault turns the fault into a panic, for
	// this goroutine, which runs the whole transaction (bbolt starts none
	// of its own for View, Update or Commit).
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		r := recover()
		if r == nil {
			return
		}
		if tx != nil && !end(tx) {
			d.mu.Lock()
			d.stuck = true
			d.mu.Unlock()
		}
		err = d.fail(panicked(r))
	}()

	tx, err = d.bolt.Begin(writable)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return d.classify(err)
	}
	if !writable {
		return tx.Rollback()
	}
	// A commit that fails has been rolled back by bbolt; one that fails
	// to write (a full disk) leaves the file as it was.
	return d.classify(tx.Commit())
}

// end rolls tx back after a panic, to release bbolt's locks. A rollback
// only touches memory; if even that panics, the locks stay held and
// end reports false.
func end(tx *bolt.Tx) (ended bool) {
	defer func() {
		if recover() != nil {
			ended = tx.DB() == nil
		}
	}()
	_ = tx.Rollback()
	return tx.DB() == nil
}

func (d *DB) classify(err error) error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return d.fail(e)
	case isDamage(err):
		return d.fail(Damage(err, "%v", err))
	}
	return err
}

// fail records e as the file's damage unless damage was found before,
// and returns the error that stands for it.
func (d *DB) fail(e *Error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		o := Options{Damaged: d.damaged}
		d.err = o.damaged(d.path, e)
	}
	return d.err
}

// panicked describes a panic recovered from bbolt.
func panicked(r any) *Error {
	err, _ := r.(error)
	var re runtime.Error
	if errors.As(err, &re) {
		if _, ok := re.(interface{ Addr() uintptr }); ok { // a memory fault
			return Damage(err, "bbolt read outside its pages: the file is cut short or overwritten, or the disk failed")
		}
	}
	return Damage(err, "bbolt stopped: %v", r)
}

// Close closes the database; it is idempotent. After damage it does not
// wait for locks that a failed transaction may hold.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	stuck := d.stuck
	d.mu.Unlock()
	if stuck { // the map stays until the process exits
		return release(d.file)
	}
	return d.bolt.Close()
}
