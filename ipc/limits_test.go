package ipc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Options.Limits reaches the listener's connections: a client whose call
// is larger than MaxMessageSize is dropped, naming the reason, and a
// client whose calls fit carries on.
func TestListenAddressLimits(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	server := newListeningIpc(t, ipc.Options{Limits: protocol.Limits{MaxMessageSize: 4 << 10}})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	client := newClientIpc(t)
	small, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(small)
	big, err := client.ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(big)

	if _, err := big.Echo(ctx, strings.Repeat("x", 8<<10)); !errors.Is(err, mp.ErrDisconnected) {
		t.Fatalf("an 8 KiB echo to a node that takes 4 KiB messages: %v; want a disconnection", err)
	}
	server.logs.wait(t, `msg="connection closed"`, "reason=error", "message too large")
	msg := strings.Repeat("y", 2<<10)
	if got, err := small.Echo(ctx, msg); err != nil || got != msg {
		t.Errorf("a 2 KiB echo: %d bytes, %v", len(got), err)
	}
}
