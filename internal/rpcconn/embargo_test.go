package rpcconn

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// mirrorMethod returns the capability it is given: a test-only method on
// a made-up interface, served by the bootstrap object of TestEmbargo.
var mirrorMethod = capnp.Method{InterfaceID: 0xdeadbeef01, MethodID: 0, InterfaceName: "Mirror", MethodName: "mirror"}

func mirrorImpl(ctx context.Context, call *server.Call) error {
	in, err := call.Args().Ptr(0)
	if err != nil {
		return err
	}
	res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
	if err != nil {
		return err
	}
	cl := in.Interface().Client().AddRef()
	return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(cl)).ToPtr())
}

// recorder is an Echo that records the order of the calls it gets.
// Calls whose argument starts with "p" (pipelined through the peer) wait
// for gate, if set, so that their answers cannot come back before the
// peer's server has handed them all on: go-capnp's server crashes
// (AnswerQueue.Fulfill, nil PipelineCaller) when its rpc's importClient.Recv
// finds the answer of a call it forwards already done.
type recorder struct {
	mu   sync.Mutex
	got  []string
	gate chan struct{}
}

func (r *recorder) client() schema.Echo {
	return schema.Echo(capnp.NewClient(server.New([]server.Method{{
		Method: capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0},
		Impl: func(ctx context.Context, call *server.Call) error {
			s, _ := schema.Echo_echo_Params(call.Args()).Echo()
			if r.gate != nil && strings.HasPrefix(s, "p") {
				select {
				case <-r.gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			r.mu.Lock()
			r.got = append(r.got, s)
			r.mu.Unlock()
			res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
			if err != nil {
				return err
			}
			return schema.Echo_echo_Results(res).SetResult(s)
		},
	}}, nil, nil)))
}

// TestEmbargo sends a local capability to the peer, which returns it;
// calls pipelined on the returned capability travel to the peer and back,
// and calls made directly after the Return must not overtake them.
func TestEmbargo(t *testing.T) {
	for _, k := range pairKinds {
		t.Run(k.name, func(t *testing.T) {
			if !k.ourClient && os.Getenv("RPCCONN_GOCAPNP_EMBARGO") != "1" {
				// Now and then (about 1 round in 200 without -race)
				// go-capnp's client lets calls made after the Return
				// overtake calls it pipelined before: it decides its
				// embargoes when the Return arrives, from the paths
				// pipelined on so far, but resolves the question
				// later in a goroutine (rpc.go:1159-1172), and calls
				// pipelined in between go over the wire without an
				// embargo. It happens with go-capnp on both sides too
				// (2 of 400 rounds); see STATUS.md.
				t.Skip("go-capnp's client reorders pipelined calls rarely; RPCCONN_GOCAPNP_EMBARGO=1 runs it")
			}
			for round := 0; round < 20; round++ {
				ts := newTestServer()
				methods := append(ts.methods(), server.Method{Method: mirrorMethod, Impl: mirrorImpl})
				boot0 := capnp.NewClient(server.New(methods, nil, nil))
				client, srv := newPair(t, k.ourClient, k.ourServer, boot0)
				ctx := testCtx(t)
				boot := client.bootstrap(ctx)
				rec := &recorder{gate: make(chan struct{})}
				local := rec.client()
				ans, rel := boot.SendCall(ctx, capnp.Send{
					Method:   mirrorMethod,
					ArgsSize: capnp.ObjectSize{PointerCount: 1},
					PlaceArgs: func(s capnp.Struct) error {
						return s.SetPtr(0, capnp.NewInterface(s.Segment(), s.Message().CapTable().Add(capnp.Client(local).AddRef())).ToPtr())
					},
				})
				promised := schema.Echo(ans.Future().Field(0, nil).Client())
				var want []string
				var futs []schema.Echo_echo_Results_Future
				var rels []capnp.ReleaseFunc
				call := func(e schema.Echo, s string) {
					f, r := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
					futs, rels = append(futs, f), append(rels, r)
					want = append(want, s)
				}
				for i := 0; i < 10; i++ {
					call(promised, fmt.Sprint("p", i))
				}
				if _, err := ans.Struct(); err != nil {
					t.Fatal(err)
				}
				close(rec.gate)
				for i := 0; i < 10; i++ {
					call(promised, fmt.Sprint("d", i))
				}
				for i, f := range futs {
					if _, err := f.Struct(); err != nil {
						t.Fatalf("call %s: %v", want[i], err)
					}
					rels[i]()
				}
				rel()
				rec.mu.Lock()
				got := fmt.Sprint(rec.got)
				rec.mu.Unlock()
				if got != fmt.Sprint(want) {
					t.Fatalf("round %d: calls arrived as %s, made as %v", round, got, want)
				}
				local.Release()
				boot.Release()
				client.close()
				srv.close()
			}
		})
	}
}

// slowMakeMethod returns a new test object after ms milliseconds.
var slowMakeMethod = capnp.Method{InterfaceID: 0xdeadbeef02, MethodID: 0, InterfaceName: "SlowMake", MethodName: "make"}

func slowMakeImpl(ts *testServer) func(context.Context, *server.Call) error {
	return func(ctx context.Context, call *server.Call) error {
		call.Go()
		select {
		case <-time.After(30 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
		if err != nil {
			return err
		}
		return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(ts.client())).ToPtr())
	}
}

// TestReceiverAnswer passes the promised result of a call that has not
// returned back to the peer that is computing it (receiverAnswer): the
// peer's calls on it wait for the result and then reach it.
func TestReceiverAnswer(t *testing.T) {
	for _, k := range pairKinds {
		t.Run(k.name, func(t *testing.T) {
			ts := newTestServer()
			methods := append(ts.methods(), server.Method{Method: slowMakeMethod, Impl: slowMakeImpl(ts)})
			client, _ := newPair(t, k.ourClient, k.ourServer, capnp.NewClient(server.New(methods, nil, nil)))
			ctx := testCtx(t)
			boot := client.bootstrap(ctx)
			defer boot.Release()
			for round := 0; round < 5; round++ {
				ans, rel := boot.SendCall(ctx, capnp.Send{Method: slowMakeMethod})
				promised := testschema.Callback(ans.Future().Field(0, nil).Client())
				f, rel2 := testschema.Callback(boot).Call(ctx, func(p testschema.Callback_call_Params) error {
					p.SetDepth(1)
					return p.SetBack(promised.AddRef())
				})
				r, err := f.Struct()
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if r.Depth() != 1 {
					t.Fatalf("depth %d", r.Depth())
				}
				rel2()
				if _, err := ans.Struct(); err != nil {
					t.Fatal(err)
				}
				rel()
			}
		})
	}
}
