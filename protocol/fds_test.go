package protocol_test

import (
	"os"
	"testing"
	"time"
)

// checkFDs fails the test if, once its cleanups have run, the process
// holds more descriptors than when checkFDs was called. Sockets close
// asynchronously (a Conn's goroutines close theirs on the way out), so it
// waits for the count to come back, up to patience. Call it first in the
// test, so that its cleanup runs last; not in parallel tests.
func checkFDs(t *testing.T) {
	t.Helper()
	before := fdCount(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(patience)
		for {
			n := fdCount(t)
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d descriptors open after the test, %d before", n, before)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// fdCount counts this process's open descriptors.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own
}
