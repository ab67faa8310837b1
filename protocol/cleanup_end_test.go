package protocol_test

import (
	"testing"

	"github.com/gomultiprocess/multiprocess/protocol"
)

// A cleanup added to a proxy after its connection ended runs at once, in
// the caller's goroutine, like Conn.AddCleanup: no goroutine is left that
// nobody waits for.
func TestProxyAddCleanupAfterEndRunsInCaller(t *testing.T) {
	conn, proxy, _ := session(t)
	defer proxy.Release()
	conn.Close()
	waitDone(t, "client Done", conn.Done())

	ran := false
	if err := protocol.AddCleanup(proxy, func() { ran = true }); err != nil {
		t.Fatalf("AddCleanup after the end: %v", err)
	}
	// No synchronisation on purpose: ran is set before AddCleanup returns,
	// or the race detector reports the write from another goroutine.
	if !ran {
		t.Fatal("cleanup added after the connection ended did not run before AddCleanup returned")
	}

	var n counter
	conn.AddCleanup(n.inc)
	if n.get() != 1 {
		t.Fatalf("Conn.AddCleanup after the end ran %d times before returning, want 1", n.get())
	}
}
