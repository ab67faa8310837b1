package rpcconn

import (
	"encoding/binary"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// hostileCallFrame builds a Call of qid whose target pointer is patched
// by patch (given the segment's bytes and the offsets of the Call's
// pointer 0 and of the parameters struct), framed.
func hostileCallFrame(t *testing.T, qid uint32, patch func(data []byte, ptr0, params uint32)) []byte {
	t.Helper()
	msg, root := newMessage()
	call, _, params, err := buildCallMsg(root, 0, echoMethod, capnp.ObjectSize{DataSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	call.SetQuestionId(qid)
	cs := capnp.Struct(call)
	patch(params.Segment().Data(), structOff(cs)+uint32(cs.Size().DataSize), structOff(params))
	frame, err := appendFrame(nil, msg, nil)
	msg.Release()
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// reframed returns msg as the peer would receive it: framed, and read
// back from the frame. msg is released.
func reframed(t *testing.T, msg *capnp.Message) *capnp.Message {
	t.Helper()
	frame, err := appendFrame(nil, msg, nil)
	msg.Release()
	if err != nil {
		t.Fatal(err)
	}
	got, err := capnp.Unmarshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// nearStructPtr encodes a struct pointer at from to to, of size sz.
func nearStructPtr(from, to uint32, sz capnp.ObjectSize) uint64 {
	rel := (int64(to) - int64(from) - 8) / 8
	return uint64(uint32(int32(rel)<<2)) | uint64(sz.DataSize/8)<<32 | uint64(sz.PointerCount)<<48
}

// A Call whose target is an empty struct placed where the parameters
// begin (go-capnp reads it as importedCap 0) must not make the template
// of the next Call read its import ID past the bytes it compares: two
// such Calls are answered, or end the connection, without a bug.
func TestRecvTemplateEmptyTarget(t *testing.T) {
	_, p, _ := newRawPair(t, nil)
	p.send(rpcmsg.Bootstrap(1)) // export 0
	p.expect(rpccp.Message_Which_return)
	for qid := uint32(5); qid < 7; qid++ {
		p.write(hostileCallFrame(t, qid, func(data []byte, ptr0, params uint32) {
			binary.LittleEndian.PutUint64(data[ptr0:], nearStructPtr(ptr0, params, capnp.ObjectSize{}))
		}))
	}
	for returns := 0; returns < 2; {
		m, err := p.recv()
		if err != nil {
			return // the connection ended: fine, as long as nothing panicked
		}
		if m.Which() == rpccp.Message_Which_abort {
			e, _ := m.Abort()
			r, _ := e.Reason()
			if strings.Contains(r, "internal error") {
				t.Fatalf("the connection ended on a bug: %s", r)
			}
		}
		switch m.Which() {
		case rpccp.Message_Which_return:
			returns++
		case rpccp.Message_Which_abort:
			return
		}
	}
}

// A Call whose header structs are spread over a large message (here 256
// KiB between the target and the parameters) is no template: the
// template would keep a copy of those bytes for the connection's life,
// long after the frame's buffer went back to its pool.
func TestRecvTemplateLargePrefix(t *testing.T) {
	msg, root := newMessage()
	call, err := root.NewCall()
	if err != nil {
		t.Fatal(err)
	}
	call.SetQuestionId(3)
	call.SetInterfaceId(echoMethod.InterfaceID)
	tgt, err := call.NewTarget()
	if err != nil {
		t.Fatal(err)
	}
	tgt.SetImportedCap(0)
	if _, err := capnp.NewStruct(root.Segment(), capnp.ObjectSize{DataSize: 1 << 18}); err != nil {
		t.Fatal(err)
	}
	pay, err := call.NewParams()
	if err != nil {
		t.Fatal(err)
	}
	params, err := capnp.NewStruct(pay.Segment(), capnp.ObjectSize{DataSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := pay.SetContent(params.ToPtr()); err != nil {
		t.Fatal(err)
	}
	got := reframed(t, msg)
	r, err := rpccp.ReadRootMessage(got)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseCall(r)
	if err != nil {
		t.Fatal(err)
	}
	var tm recvTemplate
	tm.record(got, r, &h)
	if tm.ok || cap(tm.prefix) > maxRecvPrefix {
		t.Errorf("template recorded %v, keeping %d bytes", tm.ok, cap(tm.prefix))
	}
}

// A Return without a data section (answer ID 0, results) is no template:
// the bytes where the template would read the next Return's ID are the
// results pointer's, which the match does not compare.
func TestRecvTemplateReturnWithoutData(t *testing.T) {
	msg, root := newMessage()
	seg := root.Segment()
	ret, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	capnp.Struct(root).SetUint16(0, uint16(rpccp.Message_Which_return))
	if err := capnp.Struct(root).SetPtr(0, ret.ToPtr()); err != nil {
		t.Fatal(err)
	}
	pay, err := rpccp.NewPayload(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ret.SetPtr(0, capnp.Struct(pay).ToPtr()); err != nil {
		t.Fatal(err)
	}
	content, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := pay.SetContent(content.ToPtr()); err != nil {
		t.Fatal(err)
	}
	got := reframed(t, msg)
	r, err := rpccp.ReadRootMessage(got)
	if err != nil {
		t.Fatal(err)
	}
	if r.Which() != rpccp.Message_Which_return {
		t.Fatalf("built a %v", r.Which())
	}
	rr, err := r.Return()
	if err != nil || rr.Which() != rpccp.Return_Which_results || rr.AnswerId() != 0 {
		t.Fatalf("built %v, %v", rr.Which(), err)
	}
	p, err := rr.Results()
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Content()
	if err != nil || !c.IsValid() {
		t.Fatalf("content %v, %v", c.IsValid(), err)
	}
	var tm retTemplateIn
	tm.record(got, rr, c)
	if tm.ok {
		t.Errorf("a Return without a data section is a template, its ID read at %d", tm.idOff)
	}
}
