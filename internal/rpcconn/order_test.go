package rpcconn

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// slowHook records the calls it receives, in the order its Recv
// accepts them; the first Recv takes a while (as a descheduled goroutine
// would).
type slowHook struct {
	mu    sync.Mutex
	first bool
	got   []uint16
}

func (h *slowHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	h.mu.Lock()
	first := !h.first
	h.first = true
	h.mu.Unlock()
	if first {
		time.Sleep(50 * time.Millisecond)
	}
	h.mu.Lock()
	h.got = append(h.got, r.Method.MethodID)
	h.mu.Unlock()
	r.ReleaseArgs()
	if _, err := r.Returner.AllocResults(capnp.ObjectSize{}); err != nil {
		r.Returner.PrepareReturn(err)
	}
	r.Returner.Return()
	return failedCaller{errNoPipeline}
}

func (h *slowHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, errNoPipeline), func() {}
}
func (h *slowHook) Brand() capnp.Brand { return capnp.Brand{} }
func (h *slowHook) Shutdown()          {}
func (h *slowHook) String() string     { return "slowHook" }

var makeHookMethod = capnp.Method{InterfaceID: 0xdeadbeef04, MethodID: 0, InterfaceName: "MakeHook", MethodName: "make"}

// TestPipelinedBeforeReturn: calls pipelined on an answer reach the
// result capability before any call the peer makes on it after seeing
// the Return (E-order: the C++ client's embargo-later case saw 2 3 4 0 1
// once in 500 runs, when the Return went out before the queued calls
// were handed on).
func TestPipelinedBeforeReturn(t *testing.T) {
	hook := &slowHook{}
	c, p := newRawServer(t, capnp.NewClient(server.New([]server.Method{{
		Method: makeHookMethod,
		Impl: func(ctx context.Context, call *server.Call) error {
			res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
			if err != nil {
				return err
			}
			cl := capnp.NewClient(hook)
			return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(cl)).ToPtr())
		}},
	}, nil, nil)))
	e := p.bootstrap(0)
	p.send(callTo(1, importedCap(e), makeHookMethod.InterfaceID, 0, nil))
	p.send(callTo(2, promisedAnswer(1, 0), 0xdeadbeef05, 0, nil))
	var x uint32
	got := map[uint32]bool{}
	for {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		got[r.AnswerId()] = true // 2 may return first
		if r.AnswerId() != 1 {
			continue
		}
		res, err := r.Results()
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := res.CapTable()
		x = ct.At(0).SenderHosted()
		break
	}
	p.send(callTo(3, importedCap(x), 0xdeadbeef05, 1, nil))
	for !got[2] || !got[3] {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		got[r.AnswerId()] = true
	}
	hook.mu.Lock()
	order := fmt.Sprint(hook.got)
	hook.mu.Unlock()
	if order != "[0 1]" {
		t.Fatalf("calls reached the capability as %s, want the pipelined one (0) first", order)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// newRawServer serves boot to a raw peer.
func newRawServer(t *testing.T, boot capnp.Client) (*Conn, *rawPeer) {
	t.Helper()
	a, b := socketPair(t)
	c := NewConn(a, &Options{BootstrapClient: boot})
	p := newRawPeer(t, b)
	t.Cleanup(func() {
		b.Close()
		c.Close()
		<-c.Done()
	})
	return c, p
}
