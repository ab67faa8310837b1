package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrDataDirInUse is returned by LockDataDir when another process holds
// the data directory's lock.
var ErrDataDirInUse = errors.New("process: data directory in use")

// DataDirLock is an exclusive lock on a data directory, held for the life
// of the process that took it.
type DataDirLock struct {
	f *os.File
}

// LockDataDir creates dir with mode 0700 if it does not exist and takes an
// exclusive lock on dir/.lock without waiting. A directory locked by
// another process gives an error wrapping ErrDataDirInUse. The lock is
// released by Unlock or when the process ends, however it ends.
func LockDataDir(dir string) (*DataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("process: create data directory: %w", err)
	}
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("process: open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another process", ErrDataDirInUse, dir)
		}
		return nil, fmt.Errorf("process: lock %s: %w", path, err)
	}
	return &DataDirLock{f: f}, nil
}

// Unlock releases the lock. It is idempotent.
func (l *DataDirLock) Unlock() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
