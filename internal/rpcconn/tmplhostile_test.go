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
