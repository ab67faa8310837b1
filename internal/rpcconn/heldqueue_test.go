package rpcconn

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
)

var (
	// heldSlowMethod returns, once its gate opens, a gatedGiver.
	heldSlowMethod = capnp.Method{InterfaceID: 0xdeadbeef04, MethodID: 0, InterfaceName: "HeldSlow", MethodName: "make"}
	// heldUseMethod takes the promised result of heldSlowMethod and
	// calls give on it, through a local promise, with calls pipelined
	// on the results.
	heldUseMethod = capnp.Method{InterfaceID: 0xdeadbeef04, MethodID: 1, InterfaceName: "HeldSlow", MethodName: "use"}
	// giveMethod returns, once its gate opens, results whose pointer 0
	// is text and pointer 1 a null capability.
	giveMethod = capnp.Method{InterfaceID: 0xdeadbeef05, MethodID: 0, InterfaceName: "Giver", MethodName: "give"}
)

func gatedGiver(gate <-chan struct{}) capnp.Client {
	return capnp.NewClient(server.New([]server.Method{{Method: giveMethod, Impl: func(ctx context.Context, call *server.Call) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 2})
		if err != nil {
			return err
		}
		txt, err := capnp.NewText(res.Segment(), "not a capability")
		if err != nil {
			return err
		}
		return res.SetPtr(0, txt.ToPtr())
	}}}, nil, nil))
}

// TestPipelineOnHeldCallToRunningServer: a call held in an answer (made
// on the peer's receiverAnswer promise) is delivered to a local server
// whose method is still running, and calls pipelined on the held call
// target a text field and a null capability of its results. They fail,
// alone; they used to be queued in go-capnp's AnswerQueue of the server
// call, whose Fulfill crashed the process on the nil PipelineCaller of
// such a target.
func TestPipelineOnHeldCallToRunningServer(t *testing.T) {
	for _, k := range pairKinds {
		if !k.ourServer {
			continue // the answer is the server's
		}
		t.Run(k.name, func(t *testing.T) {
			for round := 0; round < 3; round++ {
				slowGate, giveGate, ready := make(chan struct{}), make(chan struct{}), make(chan struct{})
				slow := server.Method{Method: heldSlowMethod, Impl: func(ctx context.Context, call *server.Call) error {
					call.Go()
					select {
					case <-slowGate:
					case <-ctx.Done():
						return ctx.Err()
					}
					res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
					if err != nil {
						return err
					}
					return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(gatedGiver(giveGate))).ToPtr())
				}}
				use := server.Method{Method: heldUseMethod, Impl: func(ctx context.Context, call *server.Call) error {
					call.Go()
					in, err := call.Args().Ptr(0)
					if err != nil {
						return err
					}
					back := in.Interface().Client()
					l, r := capnp.NewLocalPromise[capnp.Client]()
					defer l.Release()
					gans, grel := l.SendCall(ctx, capnp.Send{Method: giveMethod})
					defer grel()
					tans, trel := gans.Future().Field(0, nil).Client().SendCall(ctx, capnp.Send{Method: giveMethod})
					defer trel()
					nans, nrel := gans.Future().Field(1, nil).Client().SendCall(ctx, capnp.Send{Method: giveMethod})
					defer nrel()
					r.Fulfill(back.AddRef())
					close(ready)
					if _, err := gans.Struct(); err != nil {
						return fmt.Errorf("give: %w", err)
					}
					if _, err := tans.Struct(); err == nil {
						return errors.New("call pipelined on a text field succeeded")
					}
					if _, err := nans.Struct(); err == nil {
						return errors.New("call pipelined on a null capability succeeded")
					}
					return nil
				}}
				client, _ := newPair(t, k.ourClient, k.ourServer, capnp.NewClient(server.New([]server.Method{slow, use}, nil, nil)))
				ctx := testCtx(t)
				boot := client.bootstrap(ctx)
				ans, rel := boot.SendCall(ctx, capnp.Send{Method: heldSlowMethod})
				promised := ans.Future().Field(0, nil).Client()
				uans, urel := boot.SendCall(ctx, capnp.Send{
					Method:   heldUseMethod,
					ArgsSize: capnp.ObjectSize{PointerCount: 1},
					PlaceArgs: func(s capnp.Struct) error {
						return s.SetPtr(0, capnp.NewInterface(s.Segment(), s.Message().CapTable().Add(promised.AddRef())).ToPtr())
					},
				})
				select {
				case <-ready: // give and the calls pipelined on it wait in the answer
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				}
				close(slowGate)
				// The Return goes out once the held calls were handed on:
				// give is running, the pipelined calls wait behind it.
				if _, err := ans.Struct(); err != nil {
					t.Fatal(err)
				}
				close(giveGate)
				if _, err := uans.Struct(); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				urel()
				rel()
				promised.Release()
				boot.Release()
			}
		})
	}
}
