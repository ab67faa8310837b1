package protocol_test

import (
	"context"
	"errors"
	"testing"

	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// A peer on go-capnp's own rpc.Conn ends the connection with an Abort
// ("connection closed"): that is a normal close, logged as one.
func TestGoCapnpPeerCloses(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	a, b := socketpair(t)
	served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log})

	rc := rpc.NewConn(transport.NewStream(a), nil)
	boot := schema.Init(rc.Bootstrap(ctx))
	echo, release := makeEcho(ctx, boot)
	if got, err := callEcho(ctx, echo, "hi"); err != nil || got != "hi" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	release()
	boot.Release()
	if err := rc.Close(); err != nil {
		t.Errorf("rpc.Conn.Close: %v", err)
	}

	if err := waitErr(t, "Serve", served); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if l := logBuf.Lines("level=ERROR"); len(l) > 0 {
		t.Errorf("logged errors: %q", l)
	}
	if len(logBuf.Lines("connection closed", `reason="peer closed"`, "peer aborted: connection closed")) != 1 {
		t.Errorf("no 'connection closed' line for the peer's abort")
	}
}

func TestConnectWithEndedContext(t *testing.T) {
	a, b := socketpair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	conn, client, err := protocol.Connect(ctx, a, nil)
	if !errors.Is(err, context.Canceled) || conn != nil || client.IsValid() {
		t.Fatalf("Connect = %v, %v, %v; want context.Canceled", conn, client, err)
	}
	// Connect closed a: b sees the end of the stream.
	if n, err := b.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read from the peer of a closed socket = %d, %v", n, err)
	}
	if err := protocol.Serve(ctx, b, newInit(false), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve with an ended context = %v, want context.Canceled", err)
	}
}
