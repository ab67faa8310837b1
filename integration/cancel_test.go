package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

// A caller's context canceled in the middle of a call to another process
// (a real node, over -ipcbind): the call returns with the context's error
// without waiting for the method, the node's method sees its ctx canceled
// (it logs so, at Debug), and the connection carries on.
func TestCancelMidCallAcrossProcess(t *testing.T) {
	fdcheck.Check(t, deadline)
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix", "-debug=ipc")
	i := newIpc(t)
	init := connectNode(t, i, dataDir, "unix")

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := echoAfter(ctx, init, "canceled", appinit.MaxEchoDelay)
		res <- err
	}()
	node.out.waitFor(t, lineRE(`msg="delaying an echo" .*delay=1m0s`))
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled call: %v, want context.Canceled", err)
		}
	case <-time.After(deadline):
		t.Fatal("canceled call did not return")
	}
	m := node.out.waitFor(t, lineRE(`msg="delayed echo canceled" .*delay=1m0s .*err=("[^"]*"|\S+)`))
	if !strings.Contains(m[1], "canceled") {
		t.Errorf("the node's method ended with %s, want a cancellation", m[1])
	}

	if got, err := nodeinit.Echo(testCtx(t), init, "after"); err != nil || got != "after" {
		t.Errorf("echo after the cancellation = %q, %v", got, err)
	}
	if strings.Contains(node.out.String(), `msg="connection closed"`) {
		t.Errorf("the node closed a connection:\n%s", node.out.String())
	}
	stopNode(t, node)
}
