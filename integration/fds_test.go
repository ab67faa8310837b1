package integration

import (
	"testing"
	"time"
)

// checkFDs fails the test if, once its cleanups have run (processes
// reaped, connections closed), this process holds more descriptors than
// when checkFDs was called. Descriptors close asynchronously (a
// connection's goroutines close its socket on the way out, a reaper its
// pipes), so it waits for the count to come back, up to deadline. Call it
// first in the test, so that its cleanup runs last; the helpers that start
// a process or make an Ipc call it for the tests that use them.
func checkFDs(t *testing.T) {
	t.Helper()
	before := countFDs(t)
	t.Cleanup(func() {
		end := time.Now().Add(deadline)
		for {
			n := countFDs(t)
			if n <= before {
				return
			}
			if time.Now().After(end) {
				t.Errorf("%d descriptors open after the test, %d before", n, before)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
