package protocol_test

import (
	"context"
	"testing"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// gatedInit's makeEcho returns an Echo served through NewServer once
// gate is closed.
type gatedInit struct {
	initServer
	gate chan struct{}
}

func (g *gatedInit) MakeEcho(ctx context.Context, call schema.Init_makeEcho) error {
	<-g.gate
	return g.initServer.MakeEcho(ctx, call)
}

// A call pipelined on a result that is not there yet, to a method the
// result's server does not implement, fails with "unimplemented"; so does
// a call pipelined on that one. go-capnp's server answers an
// unimplemented method with a nil pipeline, and its answer queue, which
// holds calls pipelined on a local call until it returns, then crashes
// the process (a method value of a nil interface, in a goroutine of its
// own): servers made by NewServer never answer with a nil pipeline.
func TestPipelinedUnimplementedMethodOnLocalServer(t *testing.T) {
	ctx := testContext(t)
	g := &gatedInit{gate: make(chan struct{})}
	boot := schema.Init(protocol.NewServer(schema.Init_Methods(nil, g), g, nil))
	defer boot.Release()

	made, release := boot.MakeEcho(ctx, nil)
	defer release()
	echo := capnp.Client(made.Result())
	unknown := capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 99, InterfaceName: "Echo", MethodName: "unknown"}
	first, releaseFirst := echo.SendCall(ctx, capnp.Send{Method: unknown})
	defer releaseFirst()
	chained, releaseChained := first.Future().Field(0, nil).Client().SendCall(ctx, capnp.Send{Method: unknown})
	defer releaseChained()
	close(g.gate) // makeEcho returns: the queued calls are delivered

	for name, ans := range map[string]*capnp.Answer{"pipelined": first, "chained": chained} {
		_, err := ans.Struct()
		if err == nil || !capnp.IsUnimplemented(err) {
			t.Errorf("%s call to an unimplemented method: %v, want an unimplemented error", name, err)
		}
	}
	// The capability from the first Result(): a second Result() while
	// makeEcho might still run would leave go-capnp's promise locked.
	if got, err := callEcho(ctx, schema.Echo(echo), "still here"); err != nil || got != "still here" {
		t.Errorf("echo on the result after the failed calls = %q, %v", got, err)
	}
}
