package protocol_test

import (
	"context"
	"errors"
	"testing"

	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
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

// A peer that ends the connection with an Abort of type disconnected (as
// some implementations always close) has closed normally: Serve returns
// nil and the log says "peer closed". Another Abort is an error.
func TestAbortOfTypeDisconnectedIsANormalClose(t *testing.T) {
	for _, tc := range []struct {
		typ    rpccp.Exception_Type
		reason string
		want   string
		err    bool
	}{
		{rpccp.Exception_Type_disconnected, "client requested disconnect", `reason="peer closed"`, false},
		{rpccp.Exception_Type_failed, "something broke", `reason=error`, true},
	} {
		ctx := testContext(t)
		log, logBuf := newLogger(t, "server")
		a, b := socketpair(t)
		served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log})
		abort := rpcmsg.Frame(func(m rpccp.Message) {
			e, _ := m.NewAbort()
			e.SetType(tc.typ)
			e.SetReason(tc.reason)
		})
		if _, err := a.Write(abort); err != nil {
			t.Fatal(err)
		}
		err := waitErr(t, "Serve", served)
		if (err != nil) != tc.err {
			t.Errorf("Abort %v: Serve = %v, want error %v", tc.typ, err, tc.err)
		}
		if len(logBuf.Lines("connection closed", tc.want, tc.reason)) != 1 {
			t.Errorf("Abort %v: no 'connection closed' line with %s", tc.typ, tc.want)
		}
		a.Close()
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
