package types_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"reflect"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/canon"
	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types"
	"github.com/gomultiprocess/multiprocess/mp"
)

// echo is a local Echo.
type echo struct{ prefix string }

func (e *echo) Echo(_ context.Context, text string) (string, error) { return e.prefix + text, nil }

// sample returns a Root whose every field holds a value other than its
// default (where a field has one), as testdata/cpp/roundtrip.c++'s
// checkValues and buildValues expect. Capabilities are left out unless
// caps: messages written to a stream cannot carry them.
func sample(caps bool) *types.Root {
	r := &types.Root{
		Scalars: &types.Scalars{
			Bool:         false,
			Int8:         -100,
			Int16:        12345,
			Int32:        -7,
			Int64:        math.MinInt64,
			Uint8:        255,
			Uint16:       0,
			Uint32:       1,
			Uint64:       math.MaxUint64,
			Float32:      -0.5,
			Float64:      1e-300,
			Color:        types.Color_Red,
			Text:         "text ✓",
			Data:         []byte{},
			Timeout:      2.5,
			Infinity:     -1.25,
			NotANumber:   0.25,
			PlainBool:    true,
			PlainInt32:   -1,
			PlainFloat64: math.Pi,
			PlainText:    "plain",
			PlainData:    []byte{0, 255},
			PlainColor:   types.Color_Blue,
			UseMempool:   false,
		},
		Lists: &types.Lists{
			Voids:          make([]struct{}, 3),
			Bools:          []bool{true, false, true, true, false, false, false, false, true},
			Int8s:          []int8{-1, 2},
			Int16s:         []int16{-300},
			Int32s:         []int32{1, -2, 3},
			Int64s:         []int64{math.MaxInt64},
			Uint8s:         []uint8{0, 255},
			Uint16s:        []uint16{65535},
			Uint32s:        []uint32{7},
			Uint64s:        []uint64{1 << 63},
			Float32s:       []float32{1.5, -2},
			Float64s:       []float64{1e100, -3},
			Texts:          []string{"a", "ccc"},
			Datas:          [][]byte{{1, 2}, {3}},
			Colors:         []types.Color{types.Color_Blue, types.Color_Red, types.Color(7)},
			Points:         []types.Point{{X: 1, Y: 2}, {X: -3, Y: 4}},
			Int32Lists:     [][]int32{{1}, {}, {2, 3}},
			TextLists:      [][]string{{"a"}, {"b", "c"}},
			PointLists:     [][]types.Point{{{X: 1, Y: 1}}, {}},
			Shapes:         []types.Shape{{Name: "in a list", Which: types.Shape_Which_Empty}},
			Uint32sDefault: []uint32{},
			TextsDefault:   []string{"z"},
			PointsDefault:  []types.Point{{X: 9, Y: 9}},
			BoolsDefault:   []bool{false},
			NestedDefault:  [][]int32{{}},
			ColorsDefault:  []types.Color{types.Color_Green},
		},
		Shapes: []types.Shape{
			{Name: "c", Which: types.Shape_Which_Circle, Circle: 2.5,
				Extra: types.Shape_Extra{Which: types.Shape_Extra_Which_Count, Count: 0}},
			{Name: "s", Which: types.Shape_Which_Square, Square: types.Shape_Square{Side: 3, Color: types.Color_Red},
				Extra: types.Shape_Extra{Which: types.Shape_Extra_Which_Nested, Nested: types.Shape_Extra_Nested{
					Depth: 0, Inner: types.Shape_Extra_Nested_Inner{Which: types.Shape_Extra_Nested_Inner_Which_Word, Word: "w"}}}},
			{Name: "l", Which: types.Shape_Which_Label, Label: "",
				Extra: types.Shape_Extra{Which: types.Shape_Extra_Which_Tags, Tags: []string{"t1", "t2"}}},
			{Name: "p", Which: types.Shape_Which_Point, Point: &types.Point{X: 5, Y: 6},
				Extra: types.Shape_Extra{Which: types.Shape_Extra_Which_None}},
			{Which: types.Shape_Which_Empty,
				Extra: types.Shape_Extra{Which: types.Shape_Extra_Which_Nested, Nested: types.Shape_Extra_Nested{
					Depth: 9, Inner: types.Shape_Extra_Nested_Inner{Which: types.Shape_Extra_Nested_Inner_Which_Small, Small: -3}}}},
		},
		Generics: &types.Generics{
			Settings: []types.Pair[string, string]{{Key: "k1", Value: "v1"}, {Key: "k2", Value: "v2"}},
			Config: []types.Pair[string, []types.Pair[string, []string]]{
				{Key: "section", Value: []types.Pair[string, []string]{{Key: "opt", Value: []string{"x", "y"}}}},
			},
			Result:      &types.Result[*types.Point]{Value: &types.Point{X: 7, Y: 8}, Error: "none"},
			Expected:    &types.Expected[string, []byte]{Which: types.Expected_Which_Error, Error: []byte("bad")},
			Outer:       &types.Outer[[]uint32]{Inner: &types.Outer_Inner[[]uint32]{Value: []uint32{1, 2}, Pairs: []types.Pair[string, []uint32]{{Key: "p", Value: []uint32{3}}}}, Direct: []uint32{4}},
			PairDefault: &types.Pair[string, string]{Key: "dk", Value: "dv"},
		},
		Anys: &types.Anys{},
		Defaults: &types.Defaults{
			Point: &types.Point{X: 0, Y: 0},
			Shape: &types.Shape{Name: "d", Which: types.Shape_Which_Circle, Circle: 0},
			Lists: func() *types.Lists {
				// Pointers left nil read as their defaults: set them.
				l := types.NewLists()
				l.Int32s = []int32{}
				return l
			}(),
			Text: "",
		},
	}
	var err error
	if r.Anys.Any, err = mp.AnyStruct(&types.Point{X: 11, Y: 12}); err != nil {
		panic(err)
	}
	if r.Anys.AnyStruct, err = mp.AnyStruct(&types.Point{X: 13, Y: 14}); err != nil {
		panic(err)
	}
	r.Anys.AnyList = mp.AnyText("any list")
	r.Generics.Unbound = &types.Pair[mp.AnyPointer, mp.AnyPointer]{Key: mp.AnyText("unbound key"), Value: mp.AnyData([]byte{5})}
	if caps {
		e := &echo{prefix: "echo: "}
		r.Lists.Echoes = []types.Echo{e, nil, e}
		r.Generics.EchoPair = &types.Pair[string, types.Echo]{Key: "e", Value: e}
		r.Anys.Cap = mp.NewClient(types.EchoInterface.Capnp(e))
	}
	return r
}

// encode writes v into the root struct of a new message.
func encode(t *testing.T, v mp.Struct) capnp.Struct {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(msg.Release)
	root, err := capnp.NewRootStruct(seg, v.CapnpSize())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.EncodeCapnp(&mp.Encoder{}, root); err != nil {
		t.Fatalf("EncodeCapnp: %v", err)
	}
	return root
}

// decode reads s into a new T.
func decode[T any, P mp.StructPtr[T]](t *testing.T, s capnp.Struct) *T {
	t.Helper()
	v := new(T)
	if err := P(v).DecodeCapnp(mp.NewDecoder(mp.MinDecodeBudget, false), s); err != nil {
		t.Fatalf("DecodeCapnp: %v", err)
	}
	return v
}

// marshal returns the bytes of s's message, and unmarshal reads them back:
// what travels between processes.
func marshal(t *testing.T, s capnp.Struct) []byte {
	t.Helper()
	b, err := s.Message().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unmarshalRoot(t *testing.T, b []byte) capnp.Struct {
	t.Helper()
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := msg.Root()
	if err != nil {
		t.Fatal(err)
	}
	return p.Struct()
}

// diff returns where got and want differ, "" if nowhere: like
// reflect.DeepEqual, but floats are compared by their bits (NaN equals
// NaN), AnyPointers by their canonical encoding, and capabilities (as
// *mp.Client) by being set.
func diff(got, want any) string {
	return diffValue("", reflect.ValueOf(got), reflect.ValueOf(want))
}

var anyPointerType = reflect.TypeFor[mp.AnyPointer]()

func diffValue(path string, g, w reflect.Value) string {
	if !g.IsValid() || !w.IsValid() {
		if g.IsValid() != w.IsValid() {
			return fmt.Sprintf("%s: got %v, want %v", path, g, w)
		}
		return ""
	}
	if g.Type() != w.Type() {
		return fmt.Sprintf("%s: got type %v, want %v", path, g.Type(), w.Type())
	}
	if g.Type() == anyPointerType {
		ga, wa := g.Interface().(mp.AnyPointer), w.Interface().(mp.AnyPointer)
		if ga.IsNull() != wa.IsNull() {
			return fmt.Sprintf("%s: got null %v, want null %v", path, ga.IsNull(), wa.IsNull())
		}
		if !ga.IsNull() && !bytes.Equal(canonicalPtr(ga.Ptr()), canonicalPtr(wa.Ptr())) {
			return fmt.Sprintf("%s: AnyPointers differ", path)
		}
		return ""
	}
	if g.Type() == reflect.TypeFor[*mp.Client]() {
		if g.IsNil() != w.IsNil() {
			return fmt.Sprintf("%s: got nil %v, want nil %v", path, g.IsNil(), w.IsNil())
		}
		return ""
	}
	switch g.Kind() {
	case reflect.Float32, reflect.Float64:
		gb, wb := math.Float64bits(g.Float()), math.Float64bits(w.Float())
		if g.Kind() == reflect.Float32 {
			gb, wb = uint64(math.Float32bits(float32(g.Float()))), uint64(math.Float32bits(float32(w.Float())))
		}
		if gb != wb {
			return fmt.Sprintf("%s: got %v, want %v", path, g.Float(), w.Float())
		}
	case reflect.Pointer:
		if g.IsNil() || w.IsNil() {
			if g.IsNil() != w.IsNil() {
				return fmt.Sprintf("%s: got %v, want %v", path, g, w)
			}
			return ""
		}
		return diffValue(path, g.Elem(), w.Elem())
	case reflect.Slice:
		if g.IsNil() != w.IsNil() {
			return fmt.Sprintf("%s: got nil %v, want nil %v", path, g.IsNil(), w.IsNil())
		}
		if g.Len() != w.Len() {
			return fmt.Sprintf("%s: got %d elements, want %d", path, g.Len(), w.Len())
		}
		for i := 0; i < g.Len(); i++ {
			if d := diffValue(fmt.Sprintf("%s[%d]", path, i), g.Index(i), w.Index(i)); d != "" {
				return d
			}
		}
	case reflect.Struct:
		for i := 0; i < g.NumField(); i++ {
			if d := diffValue(path+"."+g.Type().Field(i).Name, g.Field(i), w.Field(i)); d != "" {
				return d
			}
		}
	case reflect.Interface:
		if g.IsNil() || w.IsNil() {
			if g.IsNil() != w.IsNil() {
				return fmt.Sprintf("%s: got %v, want %v", path, g, w)
			}
			return ""
		}
		if g.Interface() != w.Interface() {
			return fmt.Sprintf("%s: got %v, want %v", path, g.Interface(), w.Interface())
		}
	default:
		if g.Interface() != w.Interface() {
			return fmt.Sprintf("%s: got %v, want %v", path, g.Interface(), w.Interface())
		}
	}
	return ""
}

// canonicalPtr returns the canonical encoding of p.
func canonicalPtr(p capnp.Ptr) []byte {
	b, err := canon.Encode(p)
	if err != nil {
		panic(err)
	}
	return b
}
