package types_test

import (
	"bytes"
	"context"
	"math"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types"
	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types/typescg"
	"github.com/gomultiprocess/multiprocess/mp"
)

// builder sets capnpc-go values, failing the test on the first error.
type builder struct {
	t   *testing.T
	seg *capnp.Segment
}

func (b *builder) ok(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
}

func (b *builder) text(s string) capnp.Ptr {
	b.t.Helper()
	l, err := capnp.NewText(b.seg, s)
	b.ok(err)
	return l.ToPtr()
}

func (b *builder) texts(ss ...string) capnp.TextList {
	b.t.Helper()
	l, err := capnp.NewTextList(b.seg, int32(len(ss)))
	b.ok(err)
	for i, s := range ss {
		b.ok(l.Set(i, s))
	}
	return l
}

func (b *builder) point(p typescg.Point, x, y int32) {
	p.SetX(x)
	p.SetY(y)
}

// buildCapnpGo builds sample(false) with capnpc-go's code.
func buildCapnpGo(t *testing.T) typescg.Root {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(msg.Release)
	b := &builder{t: t, seg: seg}
	root, err := typescg.NewRootRoot(seg)
	b.ok(err)

	s, err := root.NewScalars()
	b.ok(err)
	s.SetBool(false)
	s.SetInt8(-100)
	s.SetInt16(12345)
	s.SetInt32(-7)
	s.SetInt64(math.MinInt64)
	s.SetUint8(255)
	s.SetUint16(0)
	s.SetUint32(1)
	s.SetUint64(math.MaxUint64)
	s.SetFloat32(-0.5)
	s.SetFloat64(1e-300)
	s.SetColor(typescg.Color_red)
	b.ok(s.SetText("text ✓"))
	b.ok(s.SetData([]byte{}))
	s.SetTimeout(2.5)
	s.SetInfinity(-1.25)
	s.SetNotANumber(0.25)
	s.SetPlainBool(true)
	s.SetPlainInt32(-1)
	s.SetPlainFloat64(math.Pi)
	b.ok(s.SetPlainText("plain"))
	b.ok(s.SetPlainData([]byte{0, 255}))
	s.SetPlainColor(typescg.Color_blue)
	s.SetUseMempool(false)

	l, err := root.NewLists()
	b.ok(err)
	b.ok(l.SetVoids(capnp.List(capnp.NewVoidList(seg, 3))))
	bools, err := l.NewBools(9)
	b.ok(err)
	for i, v := range []bool{true, false, true, true, false, false, false, false, true} {
		bools.Set(i, v)
	}
	i8, _ := l.NewInt8s(2)
	i8.Set(0, -1)
	i8.Set(1, 2)
	i16, _ := l.NewInt16s(1)
	i16.Set(0, -300)
	i32, _ := l.NewInt32s(3)
	i32.Set(0, 1)
	i32.Set(1, -2)
	i32.Set(2, 3)
	i64, _ := l.NewInt64s(1)
	i64.Set(0, math.MaxInt64)
	u8, _ := l.NewUint8s(2)
	u8.Set(0, 0)
	u8.Set(1, 255)
	u16, _ := l.NewUint16s(1)
	u16.Set(0, 65535)
	u32, _ := l.NewUint32s(1)
	u32.Set(0, 7)
	u64, _ := l.NewUint64s(1)
	u64.Set(0, 1<<63)
	f32, _ := l.NewFloat32s(2)
	f32.Set(0, 1.5)
	f32.Set(1, -2)
	f64, _ := l.NewFloat64s(2)
	f64.Set(0, 1e100)
	f64.Set(1, -3)
	b.ok(l.SetTexts(b.texts("a", "ccc")))
	datas, _ := l.NewDatas(2)
	b.ok(datas.Set(0, []byte{1, 2}))
	b.ok(datas.Set(1, []byte{3}))
	colors, _ := l.NewColors(3)
	colors.Set(0, typescg.Color_blue)
	colors.Set(1, typescg.Color_red)
	colors.Set(2, typescg.Color(7))
	points, _ := l.NewPoints(2)
	b.point(points.At(0), 1, 2)
	b.point(points.At(1), -3, 4)
	il, _ := l.NewInt32Lists(3)
	for i, vs := range [][]int32{{1}, {}, {2, 3}} {
		x, err := capnp.NewInt32List(seg, int32(len(vs)))
		b.ok(err)
		for j, v := range vs {
			x.Set(j, v)
		}
		b.ok(il.Set(i, x.ToPtr()))
	}
	tl, _ := l.NewTextLists(2)
	b.ok(tl.Set(0, b.texts("a").ToPtr()))
	b.ok(tl.Set(1, b.texts("b", "c").ToPtr()))
	pl, _ := l.NewPointLists(2)
	p0, err := typescg.NewPoint_List(seg, 1)
	b.ok(err)
	b.point(p0.At(0), 1, 1)
	b.ok(pl.Set(0, p0.ToPtr()))
	p1, _ := typescg.NewPoint_List(seg, 0)
	b.ok(pl.Set(1, p1.ToPtr()))
	ls, _ := l.NewShapes(1)
	b.ok(ls.At(0).SetName("in a list"))
	ls.At(0).SetEmpty()
	ud, _ := l.NewUint32sDefault(0)
	_ = ud
	b.ok(l.SetTextsDefault(b.texts("z")))
	pd, _ := l.NewPointsDefault(1)
	b.point(pd.At(0), 9, 9)
	bd, _ := l.NewBoolsDefault(1)
	bd.Set(0, false)
	nd, _ := l.NewNestedDefault(1)
	e0, _ := capnp.NewInt32List(seg, 0)
	b.ok(nd.Set(0, e0.ToPtr()))
	cd, _ := l.NewColorsDefault(1)
	cd.Set(0, typescg.Color_green)

	shapes, err := root.NewShapes(5)
	b.ok(err)
	sh := shapes.At(0)
	b.ok(sh.SetName("c"))
	sh.SetCircle(2.5)
	sh.Extra().SetCount(0)
	sh = shapes.At(1)
	b.ok(sh.SetName("s"))
	sh.SetSquare()
	sh.Square().SetSide(3)
	sh.Square().SetColor(typescg.Color_red)
	sh.Extra().SetNested()
	sh.Extra().Nested().SetDepth(0)
	b.ok(sh.Extra().Nested().Inner().SetWord("w"))
	sh = shapes.At(2)
	b.ok(sh.SetName("l"))
	b.ok(sh.SetLabel(""))
	b.ok(sh.Extra().SetTags(b.texts("t1", "t2")))
	sh = shapes.At(3)
	b.ok(sh.SetName("p"))
	pt, err := sh.NewPoint()
	b.ok(err)
	b.point(pt, 5, 6)
	sh.Extra().SetNone()
	sh = shapes.At(4)
	sh.SetEmpty()
	sh.Extra().SetNested()
	sh.Extra().Nested().SetDepth(9)
	sh.Extra().Nested().Inner().SetSmall(-3)

	g, err := root.NewGenerics()
	b.ok(err)
	settings, _ := g.NewSettings(2)
	b.ok(settings.At(0).SetKey(b.text("k1")))
	b.ok(settings.At(0).SetValue(b.text("v1")))
	b.ok(settings.At(1).SetKey(b.text("k2")))
	b.ok(settings.At(1).SetValue(b.text("v2")))
	config, _ := g.NewConfig(1)
	b.ok(config.At(0).SetKey(b.text("section")))
	inner, err := typescg.NewPair_List(seg, 1)
	b.ok(err)
	b.ok(inner.At(0).SetKey(b.text("opt")))
	b.ok(inner.At(0).SetValue(b.texts("x", "y").ToPtr()))
	b.ok(config.At(0).SetValue(inner.ToPtr()))
	res, _ := g.NewResult()
	rp, err := typescg.NewPoint(seg)
	b.ok(err)
	b.point(rp, 7, 8)
	b.ok(res.SetValue(rp.ToPtr()))
	b.ok(res.SetError("none"))
	exp, _ := g.NewExpected()
	bad, _ := capnp.NewData(seg, []byte("bad"))
	b.ok(exp.SetError(bad.ToPtr()))
	unb, _ := g.NewUnbound()
	b.ok(unb.SetKey(b.text("unbound key")))
	five, _ := capnp.NewData(seg, []byte{5})
	b.ok(unb.SetValue(five.ToPtr()))
	outer, _ := g.NewOuter()
	oi, _ := outer.NewInner()
	u12, _ := capnp.NewUInt32List(seg, 2)
	u12.Set(0, 1)
	u12.Set(1, 2)
	b.ok(oi.SetValue(u12.ToPtr()))
	pairs, _ := oi.NewPairs(1)
	b.ok(pairs.At(0).SetKey(b.text("p")))
	u3, _ := capnp.NewUInt32List(seg, 1)
	u3.Set(0, 3)
	b.ok(pairs.At(0).SetValue(u3.ToPtr()))
	u4, _ := capnp.NewUInt32List(seg, 1)
	u4.Set(0, 4)
	b.ok(outer.SetDirect(u4.ToPtr()))
	pdef, _ := g.NewPairDefault()
	b.ok(pdef.SetKey(b.text("dk")))
	b.ok(pdef.SetValue(b.text("dv")))

	anys, err := root.NewAnys()
	b.ok(err)
	ap, _ := typescg.NewPoint(seg)
	b.point(ap, 11, 12)
	b.ok(anys.SetAny(ap.ToPtr()))
	as, _ := typescg.NewPoint(seg)
	b.point(as, 13, 14)
	b.ok(anys.SetAnyStruct(capnp.Struct(as)))
	al, _ := capnp.NewText(seg, "any list")
	b.ok(anys.SetAnyList(capnp.List(al)))

	d, err := root.NewDefaults()
	b.ok(err)
	dp, _ := d.NewPoint()
	b.point(dp, 0, 0)
	ds, _ := d.NewShape()
	b.ok(ds.SetName("d"))
	ds.SetCircle(0)
	dl, _ := d.NewLists()
	_, _ = dl.NewInt32s(0)
	// NewLists() sets the lists that have defaults to them.
	u, _ := dl.NewUint32sDefault(3)
	for i := range 3 {
		u.Set(i, uint32(i+1))
	}
	b.ok(dl.SetTextsDefault(b.texts("a", "bc")))
	pts, _ := dl.NewPointsDefault(2)
	b.point(pts.At(0), 1, 2)
	b.point(pts.At(1), 3, 4)
	bs, _ := dl.NewBoolsDefault(3)
	bs.Set(0, true)
	bs.Set(2, true)
	nl, _ := dl.NewNestedDefault(3)
	for i, vs := range [][]int32{{1}, {}, {2, 3}} {
		x, _ := capnp.NewInt32List(seg, int32(len(vs)))
		for j, v := range vs {
			x.Set(j, v)
		}
		b.ok(nl.Set(i, x.ToPtr()))
	}
	cl, _ := dl.NewColorsDefault(2)
	cl.Set(0, typescg.Color_blue)
	cl.Set(1, typescg.Color_red)
	b.ok(d.SetText(""))
	return root
}

// TestCapnpGoReadsOurs checks that what mpgen's code writes is what
// capnpc-go's code writes for the same values, field for field: their
// canonical encodings are equal (so capnpc-go reads every field as it
// was meant, defaults included).
func TestCapnpGoReadsOurs(t *testing.T) {
	ours := canonicalPtr(encode(t, sample(false)).ToPtr())
	theirs := canonicalPtr(capnp.Struct(buildCapnpGo(t)).ToPtr())
	if !bytes.Equal(ours, theirs) {
		t.Errorf("the canonical encodings differ:\nours   %x\ntheirs %x", ours, theirs)
	}
}

// TestOursReadCapnpGo decodes capnpc-go's message with mpgen's code.
func TestOursReadCapnpGo(t *testing.T) {
	root := buildCapnpGo(t)
	b := marshal(t, capnp.Struct(root))
	got := decode[types.Root](t, unmarshalRoot(t, b))
	if d := diff(got, sample(false)); d != "" {
		t.Error(d)
	}
}

// TestCapnpGoDefaults checks that capnpc-go reads mpgen's NewS values as
// its own defaults, and that mpgen reads capnpc-go's fresh structs as
// NewS.
func TestCapnpGoDefaults(t *testing.T) {
	root := encode(t, &types.Root{Scalars: types.NewScalars(), Lists: types.NewLists(), Defaults: types.NewDefaults()})
	r := typescg.Root(root)
	s, err := r.Scalars()
	if err != nil {
		t.Fatal(err)
	}
	text, _ := s.Text()
	data, _ := s.Data()
	if !s.Bool() || s.Int8() != -8 || s.Int16() != -1616 || s.Int32() != -323232 || s.Int64() != -6464646464646464 ||
		s.Uint8() != 208 || s.Uint16() != 61616 || s.Uint32() != 3232323232 || s.Uint64() != 16464646464646464646 ||
		s.Float32() != 3.25 || s.Float64() != -6.125e100 || s.Color() != typescg.Color_green || text != "default text" ||
		!bytes.Equal(data, []byte{1, 2, 3, 4}) || s.Timeout() != math.MaxFloat64 || !math.IsInf(float64(s.Infinity()), 1) ||
		!math.IsNaN(s.NotANumber()) || s.PlainBool() || s.PlainInt32() != 0 || s.PlainFloat64() != 0 || s.PlainColor() != 0 ||
		!s.UseMempool() {
		t.Errorf("capnpc-go reads NewScalars() as %v", s)
	}
	l, _ := r.Lists()
	u, _ := l.Uint32sDefault()
	ts, _ := l.TextsDefault()
	t1, _ := ts.At(1)
	ps, _ := l.PointsDefault()
	if u.Len() != 3 || u.At(2) != 3 || ts.Len() != 2 || t1 != "bc" || ps.Len() != 2 || ps.At(1).Y() != 4 {
		t.Errorf("capnpc-go reads NewLists() as %v", l)
	}
	d, _ := r.Defaults()
	dp, _ := d.Point()
	dsh, _ := d.Shape()
	dt, _ := d.Text()
	if dp.X() != 3 || dp.Y() != -4 || dsh.Which() != typescg.Shape_Which_square || dsh.Square().Side() != 2.5 || dt != "x" {
		t.Errorf("capnpc-go reads NewDefaults() as %v", d)
	}

	// capnpc-go's fresh structs read as NewS.
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	fresh, _ := typescg.NewRootRoot(seg)
	fresh.NewScalars()
	fresh.NewLists()
	fresh.NewDefaults()
	got := decode[types.Root](t, capnp.Struct(fresh))
	if dd := diff(got, &types.Root{Scalars: types.NewScalars(), Lists: types.NewLists(), Defaults: types.NewDefaults()}); dd != "" {
		t.Error(dd)
	}
}

// capnpgoEcho is an Echo served by capnpc-go's server code.
type capnpgoEcho struct{}

func (capnpgoEcho) Echo(_ context.Context, call typescg.Echo_echo) error {
	text, err := call.Args().Text()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetText("capnpc-go: " + text)
}

// TestCapnpGoCapabilities passes capabilities between the two: capnpc-go's
// client calls a Go value that mpgen's code put in a message, and mpgen's
// proxy calls a server that capnpc-go's code put in one.
func TestCapnpGoCapabilities(t *testing.T) {
	ctx := context.Background()
	e := &echo{prefix: "mpgen: "}
	root := encode(t, &types.Lists{Echoes: []types.Echo{e}})
	echoes, err := typescg.Lists(root).Echoes()
	if err != nil {
		t.Fatal(err)
	}
	ec, err := echoes.At(0)
	if err != nil {
		t.Fatal(err)
	}
	fut, rel := ec.Echo(ctx, func(p typescg.Echo_echo_Params) error { return p.SetText("hi") })
	res, err := fut.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := res.Text(); got != "mpgen: hi" {
		t.Errorf("capnpc-go's call of mpgen's Echo = %q", got)
	}
	rel()

	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	l, _ := typescg.NewRootLists(seg)
	el, _ := l.NewEchoes(1)
	srv := typescg.Echo_ServerToClient(capnpgoEcho{})
	if err := el.Set(0, srv); err != nil {
		t.Fatal(err)
	}
	got := decode[types.Lists](t, capnp.Struct(l))
	if _, ok := got.Echoes[0].(*types.EchoClient); !ok {
		t.Fatalf("a capnpc-go server decodes as %T, want a proxy", got.Echoes[0])
	}
	out, err := got.Echoes[0].Echo(ctx, "hi")
	if err != nil || out != "capnpc-go: hi" {
		t.Errorf("mpgen's call of capnpc-go's Echo = %q, %v", out, err)
	}
	mp.Release(got.Echoes[0])
	l.Message().Release()
}
