package protocol_test

import (
	"context"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// choosyInit's makeEcho waits for gate, then answers with what result
// makes of its results: nothing (a null capability), an Echo served by
// capnpc-go's code alone, or one served through NewServer.
type choosyInit struct {
	initServer
	gate   chan struct{}
	result func(schema.Init_makeEcho_Results) error
}

func (c *choosyInit) MakeEcho(_ context.Context, call schema.Init_makeEcho) error {
	<-c.gate
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return c.result(res)
}

// Calls made in this process on a server from NewServer, pipelined on a
// call that is still running, wait for it outside go-capnp's AnswerQueue:
// when the capability they target in the results turns out null, or its
// server lacks the method, they fail and the process carries on (the
// AnswerQueue's Fulfill crashed it with a nil dereference). Calls
// pipelined on those fail too; a capability that is there is called, in
// the order the calls were made.
func TestLocalPipelineOnRunningCall(t *testing.T) {
	unknown := capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 99, InterfaceName: "Echo", MethodName: "unknown"}
	cases := []struct {
		name   string
		result func(schema.Init_makeEcho_Results) error
		method capnp.Method
		want   string // in the error of the pipelined call; "" for success
	}{
		{"null capability", func(schema.Init_makeEcho_Results) error { return nil }, echoMethod, "call on null client"},
		{"method missing on capnpc-go's server", func(r schema.Init_makeEcho_Results) error {
			return r.SetResult(schema.Echo_ServerToClient(echoServer{}))
		}, unknown, "unimplemented"},
		{"capability present", func(r schema.Init_makeEcho_Results) error {
			e := echoServer{}
			return r.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, e), e, nil)))
		}, echoMethod, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			c := &choosyInit{gate: make(chan struct{}), result: tc.result}
			boot := schema.Init(protocol.NewServer(schema.Init_Methods(nil, c), c, nil))
			defer boot.Release()

			made, release := boot.MakeEcho(ctx, nil)
			defer release()
			target := capnp.Client(made.Result())
			var calls []*capnp.Answer
			for i := range 3 {
				ans, rel := target.SendCall(ctx, echoSend(tc.method, string(rune('a'+i))))
				defer rel()
				calls = append(calls, ans)
			}
			chained, relChained := calls[0].Future().Field(0, nil).Client().SendCall(ctx, echoSend(unknown, "chained"))
			defer relChained()
			close(c.gate) // makeEcho returns: the held calls are handed on
			after, relAfter := target.SendCall(ctx, echoSend(tc.method, "d"))
			defer relAfter()
			calls = append(calls, after)

			for i, ans := range calls {
				res, err := ans.Struct()
				want := string(rune('a' + i))
				switch {
				case tc.want == "" && err != nil:
					t.Errorf("call %d: %v", i, err)
				case tc.want == "":
					if got, _ := schema.Echo_echo_Results(res).Result(); got != want {
						t.Errorf("call %d answered %q, want %q", i, got, want)
					}
				case err == nil || !strings.Contains(err.Error(), tc.want):
					t.Errorf("call %d: %v, want an error containing %q", i, err, tc.want)
				}
			}
			if _, err := chained.Struct(); err == nil {
				t.Error("a call pipelined on a pipelined call's results, which have no capability, succeeded")
			}
			// The server that ran makeEcho still serves.
			again, relAgain := boot.MakeEcho(ctx, nil)
			defer relAgain()
			if _, err := again.Struct(); err != nil {
				t.Errorf("makeEcho after the pipelined calls: %v", err)
			}
		})
	}
}

var echoMethod = capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0, InterfaceName: "echo.capnp:Echo", MethodName: "echo"}

func echoSend(m capnp.Method, arg string) capnp.Send {
	return capnp.Send{
		Method:   m,
		ArgsSize: capnp.ObjectSize{PointerCount: 1},
		PlaceArgs: func(s capnp.Struct) error {
			return schema.Echo_echo_Params(s).SetEcho(arg)
		},
	}
}
