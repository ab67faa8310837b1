package interop

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/interop/internal/mpischema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
)

// TestFacadeWithCppServer connects package ipc's facade to the C++
// reference server on a unix socket: a foreign peer, which bootstraps a
// Peer and has no control channel. The facade is generic over its Init,
// so the generated Peer is the Init here. The connection must work, calls
// go through both ways, Handshake says ErrNoControl, nothing is logged at
// Error, and releasing the Init closes the connection, which the C++
// server sees.
func TestFacadeWithCppServer(t *testing.T) {
	requirePeer(t)
	path := socketPath(t)
	proc := startChild(t, peerPath, []string{"serve-unix", path}, nil)
	proc.waitLine(t, "listening")

	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("facade log:\n%s", logs.String())
		}
	})
	i := ipc.New("interop", os.Args[0], mpischema.PeerInterface, nil, &ipc.Options{Logger: log, DebugIPC: true})
	defer i.Close()
	ctx := testContext(t)
	peer, err := i.ConnectAddress(ctx, t.TempDir(), "peer", "unix:"+path)
	if err != nil {
		t.Fatalf("ConnectAddress: %v", err)
	}
	defer mp.Release(peer)
	if peer == nil {
		t.Fatal("ConnectAddress returned no Init")
	}
	cleaned := make(chan struct{})
	if err := i.AddCleanup(peer, func() { close(cleaned) }); err != nil {
		t.Fatalf("AddCleanup: %v", err)
	}

	// Calls go through, and back: C++ calls our callback.
	e, err := peer.MakeEcho(ctx)
	if err != nil {
		t.Fatalf("makeEcho: %v", err)
	}
	defer mp.Release(e)
	if got, err := e.Echo(ctx, "through the facade"); err != nil || got != "through the facade" {
		t.Errorf("echo = %q, %v", got, err)
	}
	remote, err := peer.MakeCallback(ctx)
	if err != nil {
		t.Fatalf("makeCallback: %v", err)
	}
	if trace, err := remote.Call(ctx, 3, &mpCallback{}); err != nil || trace != "c++ go c++ go" {
		t.Errorf("callback trace = %q, %v; want %q", trace, err, "c++ go c++ go")
	}
	mp.Release(remote)
	err = peer.Fail(ctx, mpischema.ErrorType_Overloaded, "boom-facade")
	checkRemoteError(t, "fail", err, mp.Overloaded, "boom-facade")

	// The C++ server answers the control channel's calls "unimplemented".
	if info, err := i.Handshake(ctx, peer); !errors.Is(err, ipc.ErrNoControl) {
		t.Errorf("Handshake = %v, %v; want ipc.ErrNoControl", info, err)
	}

	// Releasing the Init closes the connection, under the echo still held.
	mp.Release(peer)
	within(t, "the cleanup after the Init's release", cleaned)
	if _, err := e.Echo(ctx, "after"); !errors.Is(err, mp.ErrDisconnected) {
		t.Errorf("echo after the Init's release: %v, want mp.ErrDisconnected", err)
	}
	mp.Release(e)
	if err := proc.wait(t); err != nil {
		t.Errorf("C++ server: %v", err)
	}
	proc.waitLine(t, "disconnected")
	if err := i.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	out := logs.String()
	if !strings.Contains(out, "connected to a peer without a control channel") {
		t.Errorf("the facade did not log that the peer has no control channel")
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("logged at Error: %s", l)
		}
	}
}
