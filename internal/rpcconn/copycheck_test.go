package rpcconn

import (
	"encoding/binary"
	"testing"

	"capnproto.org/go/capnp/v3"
)

// A struct whose pointer points to itself: go-capnp's copy recurses until
// the stack overflows, which no recover catches. checkCopy refuses it; an
// ordinary structure passes, and its message can still be read in full.
func TestCheckCopy(t *testing.T) {
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg[0:], 0x0001_0000_0000_0000) // root: struct at word 1, one pointer
	binary.LittleEndian.PutUint64(seg[8:], 0x0001_0000_FFFF_FFFC) // word 1: struct at offset -1, i.e. itself
	cyclic := &capnp.Message{Arena: capnp.SingleSegment(seg), TraverseLimit: DefaultTraverseLimit, DepthLimit: DefaultDepthLimit}
	root, err := cyclic.Root()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCopy(root.Struct()); err == nil {
		t.Fatal("checkCopy accepted a struct that points to itself")
	}

	msg, s, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	st, _ := capnp.NewRootStruct(s, capnp.ObjectSize{PointerCount: 2})
	inner, _ := capnp.NewStruct(s, capnp.ObjectSize{DataSize: 8, PointerCount: 1})
	txt, _ := capnp.NewText(s, "hello")
	inner.SetPtr(0, txt.ToPtr())
	st.SetPtr(0, inner.ToPtr())
	l, _ := capnp.NewCompositeList(s, capnp.ObjectSize{PointerCount: 1}, 3)
	for i := range 3 {
		l.Struct(i).SetPtr(0, inner.ToPtr())
	}
	st.SetPtr(1, l.ToPtr())
	if err := checkCopy(st); err != nil {
		t.Fatalf("checkCopy refused an ordinary structure: %v", err)
	}
	dst, ds, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	defer dst.Release()
	defer msg.Release()
	out, _ := capnp.NewRootStruct(ds, capnp.ObjectSize{PointerCount: 2})
	if err := out.CopyFrom(st); err != nil {
		t.Fatalf("copy after the check: %v", err)
	}
	p, err := out.Ptr(0)
	if err != nil {
		t.Fatal(err)
	}
	if q, err := p.Struct().Ptr(0); err != nil || q.Text() != "hello" {
		t.Fatalf("copied text = %q, %v", q.Text(), err)
	}
}
