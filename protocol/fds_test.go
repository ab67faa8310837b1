package protocol_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkFDs fails the test if, once its cleanups have run, the process
// holds more descriptors than when checkFDs was called. Sockets close
// asynchronously (a Conn's goroutines close theirs on the way out), so it
// waits for the count to come back, up to patience. Call it first in the
// test, so that its cleanup runs last; not in parallel tests. The helpers
// that open sockets (socketpair, listen) call it too: their check covers
// what was opened after them and closed by later cleanups. (Not dial: a
// listener accepts asynchronously, so a connection dialed earlier may add
// its accepted socket after a later dial's baseline; listen's check,
// after the listener has ended, covers every dial.)
func checkFDs(t *testing.T) {
	t.Helper()
	before := fdTable(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(patience)
		for {
			now := fdTable(t)
			if len(now) <= len(before) {
				return
			}
			if time.Now().After(deadline) {
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

// fdCount counts this process's open descriptors.
func fdCount(t *testing.T) int {
	t.Helper()
	return len(fdTable(t))
}

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
	own := f.Fd()
	m := make(map[string]string, len(names))
	for _, n := range names {
		if n == strconv.FormatUint(uint64(own), 10) {
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
