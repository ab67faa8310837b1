package integration

import (
	"strings"
	"testing"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/schema"
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
