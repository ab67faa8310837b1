package process

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func TestLockDataDir(t *testing.T) {
	before := fdcheck.Count(t)
	dir := filepath.Join(t.TempDir(), "data")
	first, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o700 {
		t.Errorf("data directory mode = %o, want 700", perm)
	}
	// flock locks belong to the open file description, so a second open
	// in the same process conflicts as another process's would.
	if _, err := LockDataDir(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second lock: %v; want ErrDataDirInUse", err)
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := first.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	again, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	_ = again.Unlock()
	if after := fdcheck.Count(t); after != before {
		t.Errorf("open descriptors: %d before, %d after", before, after)
	}
}
