package rpcmsg

import (
	"encoding/binary"
	"fmt"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Frame builds one message of a single segment with build and returns it
// framed for the stream.
func Frame(build func(rpccp.Message)) []byte {
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	m, err := rpccp.NewRootMessage(seg)
	must(err)
	build(m)
	b, err := msg.Marshal()
	must(err)
	return b
}

// Bootstrap asks for the bootstrap capability as question qid.
func Bootstrap(qid uint32) func(rpccp.Message) {
	return func(m rpccp.Message) {
		b, err := m.NewBootstrap()
		must(err)
		b.SetQuestionId(qid)
	}
}

// Call calls iface.method on target as question qid. Its params are a
// struct of one data word and two pointers, room for the arguments of
// the methods the tests call, filled in by args (nil leaves it zero).
func Call(qid uint32, target func(rpccp.MessageTarget), iface uint64, method uint16, args func(capnp.Struct)) func(rpccp.Message) {
	return CallContent(qid, target, iface, method, func(seg *capnp.Segment) (capnp.Ptr, error) {
		st, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8, PointerCount: 2})
		if err != nil {
			return capnp.Ptr{}, err
		}
		if args != nil {
			args(st)
		}
		return st.ToPtr(), nil
	})
}

// CallContent is Call with params of any shape: content builds them on
// the message's segment.
func CallContent(qid uint32, target func(rpccp.MessageTarget), iface uint64, method uint16, content func(*capnp.Segment) (capnp.Ptr, error)) func(rpccp.Message) {
	return func(m rpccp.Message) {
		c, err := m.NewCall()
		must(err)
		c.SetQuestionId(qid)
		c.SetInterfaceId(iface)
		c.SetMethodId(method)
		t, err := c.NewTarget()
		must(err)
		target(t)
		p, err := c.NewParams()
		must(err)
		ptr, err := content(p.Segment())
		must(err)
		must(p.SetContent(ptr))
	}
}

// ImportedCap targets the capability the other side exported as id.
func ImportedCap(id uint32) func(rpccp.MessageTarget) {
	return func(t rpccp.MessageTarget) { t.SetImportedCap(id) }
}

// PromisedAnswer targets the results of question qid, or the capability
// reached from them through the given pointer fields, in order.
func PromisedAnswer(qid uint32, fields ...uint16) func(rpccp.MessageTarget) {
	return func(t rpccp.MessageTarget) {
		pa, err := t.NewPromisedAnswer()
		must(err)
		pa.SetQuestionId(qid)
		if len(fields) > 0 {
			ops, err := pa.NewTransform(int32(len(fields)))
			must(err)
			for i, f := range fields {
				ops.At(i).SetGetPointerField(f)
			}
		}
	}
}

// Finish finishes question qid (releasing its result capabilities, the
// default).
func Finish(qid uint32) func(rpccp.Message) {
	return func(m rpccp.Message) {
		f, err := m.NewFinish()
		must(err)
		f.SetQuestionId(qid)
	}
}

// Text sets a params struct's pointer 0 to s: the argument of methods
// that take one text, such as Echo.echo.
func Text(s string) func(capnp.Struct) {
	return func(st capnp.Struct) {
		txt, err := capnp.NewText(st.Segment(), s)
		must(err)
		must(st.SetPtr(0, txt.ToPtr()))
	}
}

// NullBody returns a framed message whose union is which and whose body
// pointer is null. NullBody(rpccp.Message_Which_return) is the 24-byte
// message that crashes go-capnp's rpc.
func NullBody(which rpccp.Message_Which) []byte {
	b := []byte{
		0, 0, 0, 0, 2, 0, 0, 0, // one segment of two words
		0, 0, 0, 0, 1, 0, 0, 0, // root: a struct of one data word, no pointers
		0, 0, 0, 0, 0, 0, 0, 0, // Message.which, set below
	}
	binary.LittleEndian.PutUint16(b[16:], uint16(which))
	return b
}

// Header returns a stream frame header that announces segments of the
// given sizes in words, with no segment data after it.
func Header(sizes ...uint32) []byte {
	n := len(sizes)
	b := make([]byte, 4+4*n+4*((n+1)%2))
	binary.LittleEndian.PutUint32(b, uint32(n-1))
	for i, s := range sizes {
		binary.LittleEndian.PutUint32(b[4+4*i:], s)
	}
	return b
}

func must(err error) {
	if err != nil {
		panic(fmt.Errorf("rpcmsg: %w", err))
	}
}
