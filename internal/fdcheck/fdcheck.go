package fdcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Check fails tb if, once tb's cleanups have run, this process holds
// more descriptors than when Check was called; the descriptors that came
// since are named in the failure. Descriptors close asynchronously, so it
// waits up to wait for the count to come back before it fails. Call it
// first in the test, so that its cleanup runs last; not in parallel
// tests, whose descriptors it would count as the test's.
func Check(tb testing.TB, wait time.Duration) {
	tb.Helper()
	check(tb, wait, func(before, now int) bool { return now <= before })
}

// CheckSame is Check that also fails when the test ends with fewer
// descriptors than it started with: it closed one it did not open.
func CheckSame(tb testing.TB, wait time.Duration) {
	tb.Helper()
	check(tb, wait, func(before, now int) bool { return now == before })
}

func check(tb testing.TB, wait time.Duration, ok func(before, now int) bool) {
	tb.Helper()
	// The runtime opens its poller's descriptors on first use: have it do
	// that now, so that they are not counted as the test's.
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	r.Close()
	w.Close()
	before := Table(tb)
	tb.Cleanup(func() {
		end := time.Now().Add(wait)
		for {
			now := Table(tb)
			if ok(len(before), len(now)) {
				return
			}
			if time.Now().After(end) {
				tb.Errorf("%d descriptors open after the test, %d before; %s", len(now), len(before), diff(before, now))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// diff names the descriptors that differ between two tables.
func diff(before, now map[string]string) string {
	var added, gone []string
	for fd, target := range now {
		if before[fd] != target {
			added = append(added, fd+" -> "+target)
		}
	}
	for fd, target := range before {
		if now[fd] != target {
			gone = append(gone, fd+" -> "+target)
		}
	}
	slices.Sort(added)
	slices.Sort(gone)
	s := fmt.Sprintf("new: %s", strings.Join(added, ", "))
	if len(gone) > 0 {
		s += fmt.Sprintf("; gone: %s", strings.Join(gone, ", "))
	}
	return s
}

// Count returns the number of descriptors this process has open, not
// counting the one it reads them with.
func Count(tb testing.TB) int {
	tb.Helper()
	return len(Table(tb))
}

// Table returns this process's open descriptors, by number, and what
// each refers to (a path, "socket:[inode]", "pipe:[inode]", ...). The
// descriptor it reads them with is left out.
func Table(tb testing.TB) map[string]string {
	tb.Helper()
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		tb.Fatal(err)
	}
	own := strconv.FormatUint(uint64(f.Fd()), 10)
	m := make(map[string]string, len(names))
	for _, n := range names {
		if n == own {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", n))
		if err != nil {
			continue // closed meanwhile
		}
		m[n] = target
	}
	return m
}
