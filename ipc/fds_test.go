package ipc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkFDs fails the test if, once its cleanups have run (children
// reaped, connections and listeners closed), the process holds more
// descriptors than when checkFDs was called. Descriptors close
// asynchronously (a connection's goroutines close its socket on the way
// out), so it waits for the count to come back, up to testDeadline. Call
// it first in the test, so that its cleanup runs last; the helpers that
// make an Ipc call it for the tests that use them. Not for parallel tests.
func checkFDs(t *testing.T) {
	t.Helper()
	before := fdTable(t)
	t.Cleanup(func() {
		end := time.Now().Add(testDeadline)
		for {
			now := fdTable(t)
			if len(now) <= len(before) {
				return
			}
			if time.Now().After(end) {
				var extra []string
				for fd, target := range now {
					if before[fd] != target {
						extra = append(extra, fd+" -> "+target)
					}
				}
				t.Errorf("%d descriptors open after the test, %d before; new: %s", len(now), len(before), strings.Join(extra, ", "))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// CheckFDs is checkFDs for package ipc_test.
var CheckFDs = checkFDs

// fdTable returns this process's open descriptors and what they are.
func fdTable(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	own := strconv.FormatUint(uint64(f.Fd()), 10)
	m := make(map[string]string, len(names))
	for _, n := range names {
		if n == own {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", n)); err == nil {
			m[n] = target
		}
	}
	return m
}
