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
