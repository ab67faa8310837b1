package main

import (
	"fmt"
	"strconv"

	"capnproto.org/go/capnp/v3/std/capnp/schema"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/canon"
)

// A slot is a value stored in a struct: a field, a parameter or a
// result.
type slot struct {
	name  string // in the schema, for messages
	t     *typ
	off   uint32 // the schema's slot offset: in units of the type's size, bits for Bool, the index for pointers
	def   schema.Value
	owner string // what default variables are named after: "S_Field"

	defVar string // the variable holding a pointer default, once made
}

// newSlot resolves the slot field f in the context b.
func (g *gen) newSlot(f schema.Field, b bindings, owner string) (*slot, error) {
	name, _ := f.Name()
	st, err := f.Slot().Type()
	if err != nil {
		return nil, err
	}
	t, err := g.resolve(st, b)
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", name, err)
	}
	def, _ := f.Slot().DefaultValue()
	return &slot{name: name, t: t, off: f.Slot().Offset(), def: def, owner: owner}, nil
}

// xor returns the XOR with a scalar default, or "" for a zero default.
func xor(bits uint64) string {
	if bits == 0 {
		return ""
	}
	return "^" + strconv.FormatUint(bits, 10)
}

// xorHex is xor for bit patterns (signed integers, floats).
func xorHex(bits uint64) string {
	if bits == 0 {
		return ""
	}
	return fmt.Sprintf("^%#x", bits)
}

// sizeName is the go-capnp accessor suffix of each data size.
var sizeName = map[uint32]string{1: "Uint8", 2: "Uint16", 4: "Uint32", 8: "Uint64"}

// textDefault returns a Text slot's default, "" if none.
func (sl *slot) textDefault() string {
	if !sl.def.IsValid() || sl.def.Which() != schema.Value_Which_text {
		return ""
	}
	s, _ := sl.def.Text()
	return s
}

// dataDefault returns a Data slot's default, nil if none.
func (sl *slot) dataDefault() []byte {
	if !sl.def.IsValid() || sl.def.Which() != schema.Value_Which_data {
		return nil
	}
	b, _ := sl.def.Data()
	if len(b) == 0 {
		return nil
	}
	return b
}

// encode returns a statement that writes val into slot sl of struct sv
// with encoder ev. A fallible statement is an expression of type error.
func (fg *fileGen) encode(sl *slot, sv, ev, val string) (stmt string, fallible bool) {
	t := sl.t
	bits := scalarBits(t, sl.def)
	off := sl.off * t.size()
	switch t.kind {
	case kVoid:
		return "", false
	case kBool:
		if bits != 0 {
			return fmt.Sprintf("%s.SetBit(%d, !%s)", sv, sl.off, val), false
		}
		return fmt.Sprintf("%s.SetBit(%d, %s)", sv, sl.off, val), false
	case kUint8, kUint16, kUint32, kUint64:
		return fmt.Sprintf("%s.Set%s(%d, %s%s)", sv, sizeName[t.size()], off, val, xor(bits)), false
	case kInt8, kInt16, kInt32, kInt64:
		u := goScalar[t.kind+kUint8-kInt8]
		return fmt.Sprintf("%s.Set%s(%d, %s(%s)%s)", sv, sizeName[t.size()], off, u, val, xorHex(bits)), false
	case kEnum:
		return fmt.Sprintf("%s.SetUint16(%d, uint16(%s)%s)", sv, off, val, xor(bits)), false
	case kFloat32, kFloat64:
		fg.useMath()
		w := "32"
		if t.kind == kFloat64 {
			w = "64"
		}
		return fmt.Sprintf("%s.Set%s(%d, math.Float%sbits(%s)%s)", sv, sizeName[t.size()], off, w, val, xorHex(bits)), false
	case kText:
		if sl.textDefault() != "" {
			return fmt.Sprintf("%s.SetTextNonNull(%s, %d, %s)", ev, sv, sl.off, val), true
		}
		return fmt.Sprintf("%s.SetText(%s, %d, %s)", ev, sv, sl.off, val), true
	case kData:
		return fmt.Sprintf("%s.SetData(%s, %d, %s)", ev, sv, sl.off, val), true
	case kStruct:
		return fmt.Sprintf("mp.SetStruct[%s](%s, %s, %d, %s)", fg.nodeType(t.node, t.args), ev, sv, sl.off, val), true
	case kInterface:
		return fmt.Sprintf("%s.Set(%s, %s, %d, %s)", fg.ifaceExpr(t), ev, sv, sl.off, val), true
	}
	return fmt.Sprintf("mp.SetPtr(%s, %s, %d, %s, %s)", ev, sv, sl.off, val, fg.codec(t)), true
}

// decode returns an expression that reads slot sl of struct sv with
// decoder dv. A fallible expression has two values, the second an error.
func (fg *fileGen) decode(sl *slot, sv, dv string) (expr string, fallible bool) {
	t := sl.t
	bits := scalarBits(t, sl.def)
	off := sl.off * t.size()
	switch t.kind {
	case kVoid:
		return "", false
	case kBool:
		if bits != 0 {
			return fmt.Sprintf("!%s.Bit(%d)", sv, sl.off), false
		}
		return fmt.Sprintf("%s.Bit(%d)", sv, sl.off), false
	case kUint8, kUint16, kUint32, kUint64:
		return fmt.Sprintf("%s.%s(%d)%s", sv, sizeName[t.size()], off, xor(bits)), false
	case kInt8, kInt16, kInt32, kInt64:
		return fmt.Sprintf("%s(%s.%s(%d)%s)", goScalar[t.kind], sv, sizeName[t.size()], off, xorHex(bits)), false
	case kEnum:
		return fmt.Sprintf("%s(%s.Uint16(%d)%s)", fg.qual(t.node), sv, off, xor(bits)), false
	case kFloat32, kFloat64:
		fg.useMath()
		w := "32"
		if t.kind == kFloat64 {
			w = "64"
		}
		return fmt.Sprintf("math.Float%sfrombits(%s.%s(%d)%s)", w, sv, sizeName[t.size()], off, xorHex(bits)), false
	case kText:
		if d := sl.textDefault(); d != "" {
			return fmt.Sprintf("%s.TextDefault(%s, %d, %s)", dv, sv, sl.off, strconv.Quote(d)), true
		}
		return fmt.Sprintf("%s.Text(%s, %d)", dv, sv, sl.off), true
	case kData:
		if d := sl.dataDefault(); d != nil {
			return fmt.Sprintf("%s.DataDefault(%s, %d, %s)", dv, sv, sl.off, bytesLiteral(d)), true
		}
		return fmt.Sprintf("%s.Data(%s, %d)", dv, sv, sl.off), true
	case kInterface:
		return fmt.Sprintf("%s.Get(%s, %s, %d)", fg.ifaceExpr(t), dv, sv, sl.off), true
	}
	if v := fg.defaultVar(sl); v != "" {
		return fmt.Sprintf("mp.GetPtrDefault(%s, %s, %d, %s, %s)", dv, sv, sl.off, fg.codec(t), v), true
	}
	if t.kind == kStruct {
		return fmt.Sprintf("mp.GetStruct[%s](%s, %s, %d)", fg.nodeType(t.node, t.args), dv, sv, sl.off), true
	}
	return fmt.Sprintf("mp.GetPtr(%s, %s, %d, %s)", dv, sv, sl.off, fg.codec(t)), true
}

// defaultVar returns the package-level variable holding the canonical
// encoding of sl's pointer default (a list, struct or AnyPointer), making
// it on first use; "" if sl has none.
func (fg *fileGen) defaultVar(sl *slot) string {
	if sl.defVar != "" {
		return sl.defVar
	}
	if name, ok := fg.g.defaults[sl.owner]; ok {
		sl.defVar = name
		return name
	}
	switch sl.t.kind {
	case kList, kStruct, kAnyPointer:
	default:
		return ""
	}
	p, err := defaultPtr(sl.t, sl.def)
	if err != nil {
		fg.fail(fmt.Errorf("default of %s: %w", sl.name, err))
		return ""
	}
	if !p.IsValid() {
		return ""
	}
	b, err := canon.Encode(p)
	if err != nil {
		fg.fail(fmt.Errorf("default of %s: %w", sl.name, err))
		return ""
	}
	name := fg.g.claimPkg("default_"+sl.owner, "the default of "+sl.name)
	fg.vars = append(fg.vars, fmt.Sprintf("var %s = %s\n", name, bytesLiteral(b)))
	fg.g.defaults[sl.owner] = name
	sl.defVar = name
	return name
}

// defaultValue returns the Go expression of sl's default, for NewS, or
// "" if it is the zero value.
func (fg *fileGen) defaultValue(sl *slot) string {
	t := sl.t
	switch t.kind {
	case kVoid, kInterface, kCapability, kParam:
		return ""
	case kText:
		if d := sl.textDefault(); d != "" {
			return strconv.Quote(d)
		}
		return ""
	case kData:
		if d := sl.dataDefault(); d != nil {
			return bytesLiteral(d)
		}
		return ""
	case kList, kStruct, kAnyPointer:
		if v := fg.defaultVar(sl); v != "" {
			return fmt.Sprintf("mp.DecodeDefault(%s, %s)", fg.codec(t), v)
		}
		return ""
	}
	bits := scalarBits(t, sl.def)
	if bits == 0 {
		return ""
	}
	return fg.scalarLiteral(t, bits)
}

// ifaceExpr returns the expression of the *mp.Interface of t, an
// interface type.
func (fg *fileGen) ifaceExpr(t *typ) string {
	d := fg.decl(t.node)
	s := fg.qualName(t.node, d.ifaceVar.name)
	if len(t.args) > 0 {
		as := ""
		for i, a := range t.args {
			if i > 0 {
				as += ", "
			}
			as += fg.goType(a)
		}
		s += "[" + as + "]()"
	}
	return s
}

// codec returns the expression of the *mp.Codec of values of t, a
// pointer type. Codecs that are composed are package-level variables,
// made once; those of types that mention a type parameter are looked up
// at run time.
func (fg *fileGen) codec(t *typ) string {
	if t.hasGenericIface() {
		// Composed where it is used: see hasGenericIface.
		switch t.kind {
		case kInterface:
			return fg.ifaceExpr(t) + ".Codec()"
		case kList:
			if t.elem.kind != kStruct {
				return "mp.ListCodec(" + fg.codec(t.elem) + ")"
			}
		}
	}
	if t.hasParam() || t.hasGenericIface() {
		return "mp.CodecFor[" + fg.goType(t) + "]()"
	}
	switch t.kind {
	case kText:
		return "mp.TextCodec"
	case kData:
		return "mp.DataCodec"
	case kAnyPointer:
		return "mp.AnyPointerCodec"
	case kCapability:
		return "mp.ClientCodec()"
	case kInterface:
		return fg.ifaceExpr(t) + ".Codec()"
	case kParam:
		return fg.codec(t.bound)
	case kStruct:
		return fg.codecVar(t, func() string { return "mp.StructCodec[" + fg.nodeType(t.node, t.args) + "]()" })
	case kList:
		e := t.elem
		switch {
		case e.kind == kBool:
			return "mp.BoolListCodec"
		case e.kind == kVoid:
			return "mp.VoidListCodec"
		case e.size() > 0:
			return fg.codecVar(t, func() string { return "mp.ScalarListCodec[" + fg.goType(e) + "]()" })
		case e.kind == kStruct:
			return fg.codecVar(t, func() string { return "mp.StructListCodec[" + fg.nodeType(e.node, e.args) + "]()" })
		}
		return fg.codecVar(t, func() string { return "mp.ListCodec(" + fg.codec(e) + ")" })
	}
	fg.fail(fmt.Errorf("no codec for a %s", capnpScalar[t.kind]))
	return "nil"
}

// codecVar returns the package-level variable holding the codec of t,
// declaring it (in fg's file) with the expression def on first use in
// the package.
func (fg *fileGen) codecVar(t *typ, def func() string) string {
	key := fg.goType(t)
	if name, ok := fg.g.codecs[key]; ok {
		return name
	}
	name := fg.g.claimPkg("codec_"+fg.mangle(t), "the codec of "+key)
	fg.g.codecs[key] = name
	fg.vars = append(fg.vars, fmt.Sprintf("var %s = %s\n", name, def()))
	return name
}
