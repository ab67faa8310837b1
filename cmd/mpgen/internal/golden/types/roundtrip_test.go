package types_test

import (
	"math"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types"
	"github.com/gomultiprocess/multiprocess/mp"
)

// TestRoundTrip writes every mapped type into a message and reads it
// back: in the same message (capabilities included: local values come
// back as themselves), and through the bytes another process would get.
func TestRoundTrip(t *testing.T) {
	want := sample(true)
	defer want.Anys.Cap.Close()
	got := decode[types.Root](t, encode(t, want))
	defer got.Anys.Cap.Close()
	if d := diff(got, want); d != "" {
		t.Errorf("in one message: %s", d)
	}
	if got.Lists.Echoes[0] != want.Lists.Echoes[0] || got.Generics.EchoPair.Value != want.Generics.EchoPair.Value {
		t.Errorf("a local capability did not come back as itself")
	}

	want = sample(false)
	b := marshal(t, encode(t, want))
	got = decode[types.Root](t, unmarshalRoot(t, b))
	if d := diff(got, want); d != "" {
		t.Errorf("through bytes: %s", d)
	}
}

// checkDefaults checks that a struct never written reads as newS(), and
// that newS() round trips.
func checkDefaults[T any, P mp.StructPtr[T]](t *testing.T, name string, newS func() *T) {
	t.Helper()
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	blank, err := capnp.NewRootStruct(seg, P(new(T)).CapnpSize())
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(decode[T, P](t, blank), newS()); d != "" {
		t.Errorf("%s: a struct never written does not read as New%s(): %s", name, name, d)
	}
	if d := diff(decode[T, P](t, encode(t, P(newS()))), newS()); d != "" {
		t.Errorf("%s: New%s() does not round trip: %s", name, name, d)
	}
}

// TestDefaults checks that the NewS constructors hold the schema's
// defaults: what a struct that was never written reads as.
func TestDefaults(t *testing.T) {
	checkDefaults(t, "Scalars", types.NewScalars)
	checkDefaults(t, "Lists", types.NewLists)
	checkDefaults(t, "Shape", types.NewShape)
	checkDefaults(t, "Generics", types.NewGenerics)
	checkDefaults(t, "Anys", types.NewAnys)
	checkDefaults(t, "Defaults", types.NewDefaults)
	checkDefaults(t, "Root", types.NewRoot)
	checkDefaults(t, "Pair", types.NewPair[string, []string])

	s := types.NewScalars()
	if s.Int16 != -1616 || s.Uint64 != 16464646464646464646 || s.Text != "default text" || s.Color != types.Color_Green ||
		s.Timeout != math.MaxFloat64 || !math.IsInf(float64(s.Infinity), 1) || !math.IsNaN(s.NotANumber) || !s.UseMempool {
		t.Errorf("NewScalars() = %+v", s)
	}
	d := types.NewDefaults()
	if d.Point.X != 3 || d.Point.Y != -4 || d.Shape.Name != "sq" || d.Shape.Which != types.Shape_Which_Square ||
		d.Shape.Square.Side != 2.5 || d.Shape.Square.Color != types.Color_Blue || d.Scalars != nil ||
		len(d.Lists.Int32s) != 2 || d.Lists.Texts[0] != "x" || d.Text != "x" {
		t.Errorf("NewDefaults() = %+v", d)
	}
	if l := types.NewLists(); len(l.PointsDefault) != 2 || l.PointsDefault[1].Y != 4 || len(l.NestedDefault[1]) != 0 || l.NestedDefault[2][1] != 3 {
		t.Errorf("NewLists() = %+v", l)
	}
	// Each call returns values of its own.
	a, b := types.NewLists(), types.NewLists()
	a.Uint32sDefault[0] = 99
	if b.Uint32sDefault[0] != 1 {
		t.Errorf("two NewLists() share their lists")
	}
}

// TestZeroValues pins down what Go's zero values mean: numbers and empty
// texts travel as they are (their defaults are XORed in), while a nil
// pointer (Data, list, struct) is null and reads as the field's default.
func TestZeroValues(t *testing.T) {
	got := decode[types.Scalars](t, encode(t, &types.Scalars{}))
	want := &types.Scalars{Data: []byte{1, 2, 3, 4}}
	if d := diff(got, want); d != "" {
		t.Error(d)
	}
	gotL := decode[types.Lists](t, encode(t, &types.Lists{}))
	if d := diff(gotL, types.NewLists()); d != "" {
		t.Error(d)
	}
}

// TestUnknownDiscriminant: a union member from a newer schema keeps its
// discriminant.
func TestUnknownDiscriminant(t *testing.T) {
	got := decode[types.Shape](t, encode(t, &types.Shape{Name: "new", Which: 99}))
	if got.Which != 99 || got.Name != "new" || got.Which.String() != "Shape_Which(99)" {
		t.Errorf("got %+v (%v)", got, got.Which)
	}
}

func TestConsts(t *testing.T) {
	if types.MaxMoney != 2100000000000000 || types.MaxDouble != math.MaxFloat64 || types.Greeting != "hello, \"world\"\n" ||
		types.Favourite != types.Color_Blue || !types.Yes || types.Third != float32(0.333) {
		t.Error("scalar consts")
	}
	if d := diff(types.Primes, []uint32{2, 3, 5, 7}); d != "" {
		t.Error(d)
	}
	if d := diff(types.Origin, &types.Point{X: -1, Y: 1}); d != "" {
		t.Error(d)
	}
	if d := diff(types.Names, []string{"ann", "bob"}); d != "" {
		t.Error(d)
	}
	if d := diff(types.Magic, []byte{0xca, 0xfe, 0xf0, 0x0d}); d != "" {
		t.Error(d)
	}
	if types.Color_Blue.String() != "blue" || types.Color(9).String() != "Color(9)" {
		t.Error("Color.String")
	}
}

// TestEncodeDoesNotAllocate: encoding and decoding a struct of numbers
// costs no allocation beyond the message's (and decoding, the value's).
func TestEncodeDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations")
	}
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(make([]byte, 0, 1024)))
	root, _ := capnp.NewRootStruct(seg, (*types.Point)(nil).CapnpSize())
	v := &types.Point{X: 1, Y: 2}
	e := &mp.Encoder{}
	d := mp.NewDecoder(mp.MinDecodeBudget, false)
	if n := testing.AllocsPerRun(100, func() {
		if err := v.EncodeCapnp(e, root); err != nil {
			t.Fatal(err)
		}
		if err := v.DecodeCapnp(d, root); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per encode and decode of a Point", n)
	}
}
