package rpcconn

import (
	"bytes"
	"testing"

	"capnproto.org/go/capnp/v3"
)

// A Return built from its template is, byte for byte, the one go-capnp
// builds, for results of several sizes filled alike.
func TestReturnTemplate(t *testing.T) {
	fill := func(st capnp.Struct) {
		sz := st.Size()
		for i := capnp.DataOffset(0); i+8 <= capnp.DataOffset(sz.DataSize); i += 8 {
			st.SetUint64(i, 0x0102030405060708+uint64(i))
		}
		for i := uint16(0); i < sz.PointerCount; i++ {
			txt, err := capnp.NewText(st.Segment(), "results")
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SetPtr(i, txt.ToPtr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, sz := range []capnp.ObjectSize{{}, {PointerCount: 1}, {DataSize: 8}, {DataSize: 16, PointerCount: 3}, {DataSize: 64, PointerCount: 8}} {
		tm := retTemplateFor(sz)
		if tm == nil {
			t.Fatalf("no template for results of %v", sz)
		}
		const id = 0x7a5b3c1d
		msg, ret, _, st, ok := tm.build(id, sz)
		if !ok {
			t.Fatalf("results of %v: the template did not build", sz)
		}
		fill(st)
		ret.SetNoFinishNeeded(true)
		want, wret, _, wst, err := buildReturn(id, sz)
		if err != nil {
			t.Fatal(err)
		}
		fill(wst)
		wret.SetNoFinishNeeded(true)
		got, err1 := appendFrame(nil, msg, nil)
		exp, err2 := appendFrame(nil, want, nil)
		msg.Release()
		want.Release()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !bytes.Equal(got, exp) {
			t.Errorf("results of %v: from the template\n%x\nfrom go-capnp\n%x", sz, got, exp)
		}
	}
	if retTemplateFor(capnp.ObjectSize{DataSize: 4}) != nil || retTemplateFor(capnp.ObjectSize{PointerCount: retTmplMax + 1}) != nil {
		t.Error("a template for results of a size it does not cover")
	}
}
