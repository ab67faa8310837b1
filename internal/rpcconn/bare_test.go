package rpcconn

import (
	"testing"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// TestBareReturnTemplate: the template is a Return that any peer reads as
// one: the answer ID it was given, empty results without capabilities,
// no Finish needed, the parameters' capabilities kept; match finds the ID
// in exactly such a frame and in nothing that differs from it.
func TestBareReturnTemplate(t *testing.T) {
	for _, id := range []uint32{0, 1, 77, 1<<32 - 1} {
		frame := bareReturn.append(nil, id)
		msg, err := capnp.Unmarshal(frame)
		if err != nil {
			t.Fatal(err)
		}
		root, err := rpccp.ReadRootMessage(msg)
		if err != nil || root.Which() != rpccp.Message_Which_return {
			t.Fatalf("not a Return: %v %v", root.Which(), err)
		}
		ret, _ := root.Return()
		if ret.AnswerId() != id || !ret.NoFinishNeeded() || ret.ReleaseParamCaps() || ret.Which() != rpccp.Return_Which_results {
			t.Errorf("id %d: answer %d, noFinishNeeded %v, releaseParamCaps %v, %v", id, ret.AnswerId(), ret.NoFinishNeeded(), ret.ReleaseParamCaps(), ret.Which())
		}
		p, err := ret.Results()
		if err != nil {
			t.Fatal(err)
		}
		content, err := p.Content()
		if err != nil || !content.IsValid() || content.Struct().Size() != (capnp.ObjectSize{}) || p.HasCapTable() {
			t.Errorf("id %d: results %v (%v), cap table %v", id, content.Struct().Size(), err, p.HasCapTable())
		}
		if got, ok := bareReturn.match(msg); !ok || got != id {
			t.Errorf("id %d: match %d %v", id, got, ok)
		}
		// Any other byte changed: not the template.
		seg, _ := msg.Segment(0)
		data := seg.Data()
		for i := range data {
			if i >= bareReturn.idOff-8 && i < bareReturn.idOff-4 {
				continue
			}
			data[i] ^= 0x10
			if _, ok := bareReturn.match(msg); ok {
				t.Errorf("byte %d changed: still matched", i)
			}
			data[i] ^= 0x10
		}
	}
}

// TestBareReturnsFromServer: the Returns of calls without results
// (stream calls among them) are written from the template, and the
// caller's connection takes them without reading them through go-capnp.
func TestBareReturnsFromServer(t *testing.T) {
	frame := bareReturn.append(nil, 5)
	if uint64(len(frame)) != bareReturn.size() {
		t.Fatalf("frame of %d bytes, size says %d", len(frame), bareReturn.size())
	}
	// The Return AllocResults and Return build for empty results is the
	// template byte for byte (so a peer cannot tell them apart).
	c := &Conn{answers: map[uint32]*answer{}}
	a := &answer{c: c, id: 5}
	if _, err := a.AllocResults(capnp.ObjectSize{}); err != nil {
		t.Fatal(err)
	}
	a.retHdr.SetNoFinishNeeded(true)
	built, err := appendFrame(nil, a.ret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(built) != string(frame) {
		t.Errorf("a Return built for empty results differs from the template:\n%x\n%x", built, frame)
	}
	recycleOut(a.ret)
}

// TestCallTemplate: a Call built from an import's template is, byte for
// byte, the one go-capnp builds, and its Call, Payload and parameters
// are the structs a reader of the message finds; another method or size
// is built anew.
func TestCallTemplate(t *testing.T) {
	h := &importClient{id: 7}
	m := capnp.Method{InterfaceID: 0x1234567890abcdef, MethodID: 3}
	size := capnp.ObjectSize{DataSize: 8, PointerCount: 2}
	build := func() (*capnp.Message, rpccp.Call, rpccp.Payload, capnp.Struct) {
		t.Helper()
		msg, call, pay, params, err := h.newCallMsg(m, size)
		if err != nil {
			t.Fatal(err)
		}
		params.SetUint64(0, 42)
		if err := params.SetText(1, "some text"); err != nil {
			t.Fatal(err)
		}
		call.SetQuestionId(9)
		return msg, call, pay, params
	}
	slow, _, _, _ := build()
	if h.tmpl.Load() == nil {
		t.Fatal("no template kept")
	}
	fast, call, pay, params := build()
	sb, _ := appendFrame(nil, slow, nil)
	fb, _ := appendFrame(nil, fast, nil)
	if string(sb) != string(fb) {
		t.Fatalf("built from the template:\n%x\nwith go-capnp:\n%x", fb, sb)
	}
	root, err := rpccp.ReadRootMessage(fast)
	if err != nil {
		t.Fatal(err)
	}
	rcall, _ := root.Call()
	rpay, _ := rcall.Params()
	content, _ := rpay.Content()
	same := func(a, b capnp.Struct) bool {
		return a.Segment() == b.Segment() && structOff(a) == structOff(b) && a.Size() == b.Size()
	}
	if !same(capnp.Struct(call), capnp.Struct(rcall)) || !same(capnp.Struct(pay), capnp.Struct(rpay)) || !same(params, content.Struct()) {
		t.Error("the template's handles are not the structs the message holds")
	}
	if rcall.QuestionId() != 9 || rcall.InterfaceId() != m.InterfaceID || rcall.MethodId() != m.MethodID {
		t.Error("the Call's fields changed")
	}
	recycleOut(slow)
	recycleOut(fast)
	// Another size: not from this template.
	msg, _, _, p2, err := h.newCallMsg(m, capnp.ObjectSize{DataSize: 16})
	if err != nil || p2.Size().DataSize != 16 {
		t.Fatalf("another size: %v %v", p2.Size(), err)
	}
	recycleOut(msg)
}
