package mp_test

import (
	"errors"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/mp"
)

// A list of 7M empty structs is a few bytes on the wire and, as
// Go structs, hundreds of megabytes: decoding it fails the call, within
// the decoder's budget, and the connection carries on.
func TestDecodeBudgetRefusesAmplification(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	// An honest list decodes.
	items := []mptestschema.Item{{Value: 1, Label: "a"}, {Value: 2}}
	if res, err := p.maker.Count(ctx, items); err != nil || res.N != 2 || res.Sum != 3 {
		t.Fatalf("count of 2 items = %+v, %v", res, err)
	}
	// A composite list of 7M elements of size zero (under the traversal
	// limit, which counts each as a word): its only word is
	// the tag, and each element would become a 32-byte Go struct.
	boot := p.maker.(*mptestschema.MakerClient).MPClient()
	call, err := boot.NewCall(ctx, &mp.Method{InterfaceID: mptestschema.MakerInterface.ID(), MethodID: 5,
		InterfaceName: "Maker", MethodName: "count", ParamsSize: capnp.ObjectSize{PointerCount: 1}, ResultsSize: capnp.ObjectSize{DataSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	params := call.Params()
	l, err := capnp.NewCompositeList(params.Segment(), capnp.ObjectSize{}, 7<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := params.SetPtr(0, l.ToPtr()); err != nil {
		t.Fatal(err)
	}
	_, err = call.Send()
	call.Finish()
	if err == nil || !strings.Contains(err.Error(), mp.ErrDecodeBudget.Error()) {
		t.Fatalf("count of 7M empty items = %v, want the decode budget's error", err)
	}
	if errors.Is(err, mp.ErrDisconnected) {
		t.Fatal("the connection ended")
	}
	if res, err := p.maker.Count(ctx, items); err != nil || res.N != 2 {
		t.Fatalf("count after the refused call = %+v, %v", res, err)
	}
}
