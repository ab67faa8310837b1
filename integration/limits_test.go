package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// Node.generateBlocks makes at most nodeinit.MaxGenerate blocks per call:
// a count outside 1 to MaxGenerate fails that call, and the connection
// and the node carry on.
func TestGenerateBlocksLimit(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix")
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)
	made, release := init.MakeNode(ctx, nil)
	defer release()
	n := made.Node()
	for _, count := range []uint32{0, nodeinit.MaxGenerate + 1} {
		fut, rel := n.GenerateBlocks(ctx, func(p schema.Node_generateBlocks_Params) error {
			p.SetCount(count)
			return p.SetAddress("limit-test")
		})
		_, err := fut.Struct()
		rel()
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("generateBlocks(%d): %v, want an out-of-range error", count, err)
		}
	}
	fut, rel := n.BlockCount(ctx, nil)
	res, err := fut.Struct()
	if err != nil || res.Count() != 0 {
		t.Errorf("blockCount after the refused calls = %d, %v; want 0", res.Count(), err)
	}
	rel()
	if got, err := nodeinit.Echo(ctx, init, "still here"); err != nil || got != "still here" {
		t.Errorf("echo after the refused calls = %q, %v", got, err)
	}
	stopNode(t, node)
}

// -ipcmessagetimeout and -ipcwritetimeout reach the node's -ipcbind
// connections: a client that leaves a message incomplete, and one that
// sends requests without reading the replies, are each dropped after the
// flag's duration (not the 10 s default), naming it, while a client that
// behaves is served throughout.
func TestNodeIPCTimeoutFlags(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix", "-ipcmessagetimeout=300ms", "-ipcwritetimeout=400ms")
	sock := filepath.Join(dataDir, "node.sock")
	i := newIpc(t)
	good := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)

	from := len(node.out.String())
	partial := dialRaw(t, sock)
	id := connID(t, node.out, from)
	partial.mustWrite(append(rpcmsg.Header(4), 1, 2, 3, 4, 5, 6, 7, 8)) // 8 of 32 bytes
	checkEnd(t, node, id, partial.end(), `peer left a message incomplete: no whole message within 300ms`)

	from = len(node.out.String())
	deaf := dialRaw(t, sock)
	id = connID(t, node.out, from)
	// Bootstrap requests whose replies nobody reads: the node's writes
	// stall once the socket's buffers are full.
	flooded := make(chan error, 1)
	go func() {
		var buf []byte
		for q := range uint32(100000) {
			buf = append(buf, rpcmsg.Frame(rpcmsg.Bootstrap(q))...)
		}
		deaf.nc.SetWriteDeadline(time.Now().Add(deadline))
		_, err := deaf.nc.Write(buf)
		flooded <- err
	}()
	m := node.out.waitFor(t, lineRE(`msg="connection closed" .*conn\.id=`+id+` .*reason=error .*err=(.*)`))
	if want := "peer stopped reading: it took no byte for 400ms"; !strings.Contains(m[1], want) {
		t.Errorf("node logged err=%s; want %q", m[1], want)
	}
	deaf.nc.Close()
	<-flooded

	if got, err := nodeinit.Echo(ctx, good, "still served"); err != nil || got != "still served" {
		t.Errorf("echo from a client that behaves = %q, %v", got, err)
	}
	stopNode(t, node)
}
