package ipc_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/process"
)

// A peer that sends requests and never reads the replies is dropped once
// Options.WriteTimeout passes without it taking a byte; a client that
// reads carries on.
func TestListenAddressWriteTimeout(t *testing.T) {
	ctx := testCtx(t)
	dir := shortDir(t)
	const timeout = 200 * time.Millisecond
	server := newListeningIpc(t, ipc.Options{WriteTimeout: timeout})
	if _, err := server.ListenAddress(dir, "unix"); err != nil {
		t.Fatal(err)
	}
	reader, err := newClientIpc(t).ConnectAddress(ctx, dir, "node", "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(reader)

	nc, err := process.Dial(ctx, filepath.Join(dir, "node.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Bootstrap requests whose replies fill the socket's buffers; the
	// node stops reading once its replies back up, so the writes go on in
	// a goroutine until the node hangs up.
	wrote := make(chan error, 1)
	go func() { wrote <- flood(nc, 20000) }()
	server.logs.wait(t, `msg="connection closed"`, "reason=error", "peer stopped reading: it took no byte for 200ms")
	nc.Close()
	<-wrote

	if got, err := reader.Echo(ctx, "still served"); err != nil || got != "still served" {
		t.Errorf("echo from a client that reads = %q, %v", got, err)
	}
}

// flood writes n Bootstrap messages to nc and returns the first write
// error.
func flood(nc net.Conn, n int) error {
	for q := range uint32(n) {
		msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			return err
		}
		m, err := rpccp.NewRootMessage(seg)
		if err != nil {
			return err
		}
		b, err := m.NewBootstrap()
		if err != nil {
			return err
		}
		b.SetQuestionId(q)
		frame, err := msg.Marshal()
		if err != nil {
			return err
		}
		if _, err := nc.Write(frame); err != nil {
			return err
		}
	}
	return nil
}
