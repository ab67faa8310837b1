package base_test

import (
	"math"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/base"
	"github.com/gomultiprocess/multiprocess/mp"
)

func TestNegInf(t *testing.T) {
	if !math.IsInf(base.NegInf, -1) {
		t.Errorf("NegInf = %v", base.NegInf)
	}
}

// TestGenericGroup round-trips a generic struct whose union member is a
// group holding a value of the type parameter.
func TestGenericGroup(t *testing.T) {
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	want := &base.Tagged[[]byte]{Which: base.Tagged_Which_Some, Some: base.Tagged_Some[[]byte]{Value: []byte{1}, Note: ""}, Kind: base.Tagged_Kind_A}
	s, err := capnp.NewRootStruct(seg, want.CapnpSize())
	if err != nil {
		t.Fatal(err)
	}
	if err := want.EncodeCapnp(&mp.Encoder{}, s); err != nil {
		t.Fatal(err)
	}
	got := new(base.Tagged[[]byte])
	if err := got.DecodeCapnp(mp.NewDecoder(mp.MinDecodeBudget, false), s); err != nil {
		t.Fatal(err)
	}
	if got.Which != want.Which || string(got.Some.Value) != "\x01" || got.Some.Note != "" || got.Kind != base.Tagged_Kind_A {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if n := base.NewTagged[string](); n.Which != base.Tagged_Which_None || n.Kind != base.Tagged_Kind_B {
		t.Errorf("NewTagged() = %+v", n)
	}
}
