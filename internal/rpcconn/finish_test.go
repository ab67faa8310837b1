package rpcconn

import (
	"strings"
	"sync/atomic"
	"testing"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

func echoArgs(s string) func(capnp.Struct) {
	return func(st capnp.Struct) { schema.Echo_echo_Params(st).SetEcho(s) }
}

// expectReturn reads the Return for qid and reports its noFinishNeeded
// flag and, for an exception, its reason.
func (p *rawPeer) expectReturn(qid uint32) (noFinish bool, exception string) {
	p.t.Helper()
	m := p.expect(rpccp.Message_Which_return)
	r, _ := m.Return()
	if r.AnswerId() != qid {
		p.t.Fatalf("return for %d, want %d", r.AnswerId(), qid)
	}
	if r.Which() == rpccp.Return_Which_exception {
		e, _ := r.Exception()
		exception, _ = e.Reason()
	}
	return r.NoFinishNeeded(), exception
}

// Results without capabilities are returned with noFinishNeeded and
// forgotten: a peer that does not know the flag may still send one
// Finish (dropped), and a call pipelined on them fails alone; the ID is
// free for a new question at once. Results with capabilities, and
// exceptions, still need their Finish.
func TestNoFinishNeeded(t *testing.T) {
	_, p, _ := newRawPair(t, nil)
	boot := p.bootstrap(0)
	p.send(callTo(1, importedCap(boot), schema.Echo_TypeID, 0, echoArgs("one")))
	if noFinish, exc := p.expectReturn(1); !noFinish || exc != "" {
		t.Fatalf("echo: noFinishNeeded %v, exception %q", noFinish, exc)
	}
	// Pipelined on it before the Return arrived, as a peer might.
	p.send(callTo(2, promisedAnswer(1, 0), schema.Echo_TypeID, 0, echoArgs("two")))
	if noFinish, exc := p.expectReturn(2); noFinish || !strings.Contains(exc, "not a capability") {
		t.Fatalf("pipelined call: noFinishNeeded %v, exception %q", noFinish, exc)
	}
	p.send(finish(2))
	p.send(finish(1)) // dropped
	// The bootstrap's results hold a capability.
	p.send(finishKeep(0))
	// ID 1 again, without its Finish: a new question.
	p.send(callTo(1, importedCap(boot), schema.Echo_TypeID, 0, echoArgs("three")))
	if noFinish, exc := p.expectReturn(1); !noFinish || exc != "" {
		t.Fatalf("echo again: noFinishNeeded %v, exception %q", noFinish, exc)
	}
	p.send(finish(1)) // dropped
	p.send(finish(1)) // one too many
	p.expectAbort("finish for unknown question 1")
}

// Between two connections of ours, a call whose results hold no
// capability costs no Finish.
func TestNoFinishSent(t *testing.T) {
	var finishes atomic.Int64
	cl, _ := connPair(t, &Options{Observe: func(sent bool, m rpccp.Message) {
		if sent && m.Which() == rpccp.Message_Which_finish {
			finishes.Add(1)
		}
	}}, &Options{BootstrapClient: newTestServer().client()})
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()
	e := schema.Echo(boot)
	for i := 0; i < 10; i++ {
		f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("x") })
		if _, err := f.Struct(); err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if n := finishes.Load(); n != 1 { // the bootstrap's
		t.Errorf("%d Finish messages sent, want 1", n)
	}
}
