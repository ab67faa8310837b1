package ipc_test

import (
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Options.Limits reaches the listener's connections: a client whose call
// is larger than MaxMessageSize is dropped, naming the reason, and a
// client whose calls fit carries on.
func TestListenAddressLimits(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server, logs := newListeningIpc(t, ipc.Options{Limits: protocol.Limits{MaxMessageSize: 4 << 10}})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	client := newClientIpc(t)
	small, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer small.Release()
	big, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer big.Release()

	if _, err := echo(ctx, big, strings.Repeat("x", 8<<10)); !protocol.IsDisconnected(err) {
		t.Fatalf("an 8 KiB echo to a node that takes 4 KiB messages: %v; want a disconnection", err)
	}
	waitLog(t, logs, `msg="connection closed"`, "reason=error", "message too large")
	msg := strings.Repeat("y", 2<<10)
	if got, err := echo(ctx, small, msg); err != nil || got != msg {
		t.Errorf("a 2 KiB echo: %d bytes, %v", len(got), err)
	}
}
