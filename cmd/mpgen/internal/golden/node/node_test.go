package node_test

import (
	"context"
	"math"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/mpproxy"
	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/node"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connect serves boot on one end of a socketpair and returns the
// bootstrap capability of the other.
func connect(t *testing.T, boot capnp.Client) capnp.Client {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := rpcconn.NewConn(conv(fds[0]), &rpcconn.Options{BootstrapClient: boot})
	client := rpcconn.NewConn(conv(fds[1]), &rpcconn.Options{})
	t.Cleanup(func() {
		client.Close()
		server.Close()
		<-client.Done()
		<-server.Done()
	})
	return client.Bootstrap(context.Background())
}

type threadMap struct{}

func (threadMap) MakeThread(_ context.Context, name string) (mpproxy.Thread, error) {
	return thread{name: name}, nil
}

type thread struct{ name string }

func (t thread) GetName(context.Context) (string, error) { return t.name, nil }

type initImpl struct{ mining *mining }

func (i *initImpl) Construct(_ context.Context, tm mpproxy.ThreadMap) (mpproxy.ThreadMap, error) {
	return tm, nil
}

func (i *initImpl) MakeEcho(context.Context, *mpproxy.Context) (node.Echo, error) {
	return nil, mp.NotImplemented("Init.makeEcho")
}

func (i *initImpl) MakeMining(ctx context.Context, c *mpproxy.Context) (node.Mining, error) {
	// The caller's thread is a capability it passed in its Context.
	name, err := c.Thread.GetName(ctx)
	if err != nil {
		return nil, err
	}
	i.mining.thread = name
	return i.mining, nil
}

type mining struct {
	node.UnimplementedMining
	thread  string
	options *node.BlockCreateOptions
}

func (m *mining) GetTip(context.Context, *mpproxy.Context) (node.Mining_GetTip_Results, error) {
	return node.Mining_GetTip_Results{Result: &node.BlockRef{Hash: []byte{1, 2}, Height: 840000}, HasResult: true}, nil
}

func (m *mining) WaitTipChanged(_ context.Context, _ *mpproxy.Context, tip []byte, timeout float64) (*node.BlockRef, error) {
	return &node.BlockRef{Hash: slices.Clone(tip), Height: int32(timeout)}, nil
}

func (m *mining) CreateNewBlock(_ context.Context, o *node.BlockCreateOptions) (node.BlockTemplate, error) {
	m.options = o
	return nil, nil
}

func (m *mining) Settings(context.Context, *mpproxy.Context) (*node.Expected[*node.Settings, string], error) {
	return &node.Expected[*node.Settings, string]{Which: node.Expected_Which_Value, Value: &node.Settings{
		ForcedSettings: []node.Pair[string, string]{{Key: "chain", Value: "regtest"}},
		RoConfig: []node.Pair[string, []node.Pair[string, []string]]{
			{Key: "main", Value: []node.Pair[string, []string]{{Key: "addnode", Value: []string{"a", "b"}}}},
		},
		NetworkOnly: true,
	}}, nil
}

// TestBitcoinStyleSchemas calls interfaces generated from schemas written
// as Bitcoin Core's are: construct with a ThreadMap, a Proxy.Context
// first parameter carrying a Thread, results beside a hasResult flag,
// defaults from consts, generics in generics.
func TestBitcoinStyleSchemas(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := &mining{}
	in := node.InitInterface.FromCapnp(connect(t, node.InitInterface.Capnp(&initImpl{mining: m})))
	defer mp.Release(in)

	tm, err := in.Construct(ctx, threadMap{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tm.(threadMap); !ok {
		t.Errorf("our own ThreadMap came back as %T", tm)
	}
	th, err := tm.MakeThread(ctx, "caller")
	if err != nil {
		t.Fatal(err)
	}
	mn, err := in.MakeMining(ctx, &mpproxy.Context{Thread: th})
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(mn)
	if m.thread != "caller" {
		t.Errorf("the server saw thread %q", m.thread)
	}

	tip, err := mn.GetTip(ctx, &mpproxy.Context{})
	if err != nil || !tip.HasResult || tip.Result.Height != 840000 || !slices.Equal(tip.Result.Hash, []byte{1, 2}) {
		t.Fatalf("GetTip = %+v, %v", tip, err)
	}
	ref, err := mn.WaitTipChanged(ctx, nil, []byte{3}, 7)
	if err != nil || ref.Height != 7 || !slices.Equal(ref.Hash, []byte{3}) {
		t.Fatalf("WaitTipChanged = %+v, %v", ref, err)
	}
	if _, err := mn.CreateNewBlock(ctx, nil); err != nil || m.options != nil {
		t.Fatalf("CreateNewBlock(nil): %v; the server read %+v", err, m.options)
	}
	if _, err := mn.CreateNewBlock(ctx, node.NewBlockCreateOptions()); err != nil {
		t.Fatal(err)
	}
	if d := *m.options; !d.UseMempool || d.BlockReservedWeight != 8000 || d.CoinbaseOutputMaxAdditionalSigops != 400 {
		t.Errorf("the server read the default options as %+v", d)
	}
	s, err := mn.Settings(ctx, nil)
	if err != nil || s.Which != node.Expected_Which_Value || !s.Value.NetworkOnly ||
		s.Value.ForcedSettings[0].Value != "regtest" || s.Value.RoConfig[0].Value[0].Value[1] != "b" {
		t.Fatalf("Settings = %+v, %v", s, err)
	}
	if _, err := mn.IsTestChain(ctx, nil); err == nil {
		t.Error("an unimplemented method succeeded")
	}
	if w := node.NewBlockWaitOptions(); w.Timeout != math.MaxFloat64 || w.FeeThreshold != node.MaxMoney {
		t.Errorf("NewBlockWaitOptions() = %+v", w)
	}
}
