package main

import (
	"fmt"
	"sort"
	"strings"

	"capnproto.org/go/capnp/v3/std/capnp/schema"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/canon"
)

// A member is one field of a struct or group.
type member struct {
	schemaName string
	name       named  // the Go field; "" for Void fields
	sl         *slot  // a slot field
	group      *node  // a group field
	disc       uint16 // its discriminant value, or noDiscriminant
	doc        string
}

func (m *member) inUnion() bool { return m.disc != schema.Field_noDiscriminant }

// A structInfo is what generating a struct's Go type and methods needs.
type structInfo struct {
	n        *node
	name     string // the Go type, without type parameters
	tparams  string // "[K, V any]" or ""
	targs    string // "[K, V]" or ""
	members  []*member
	which    named // the Go field of the union discriminant
	whichTyp string
	consts   map[uint16]named
	discOff  uint32 // the discriminant's byte offset
}

func (si *structInfo) hasUnion() bool { return si.whichTyp != "" }

// structInfo resolves the fields of struct (or group) n, whose Go type is
// named name, in its own declaration's context.
func (fg *fileGen) structInfo(n *node, name string) *structInfo {
	g := fg.g
	si := &structInfo{n: n, name: name, tparams: g.typeParamList(n), targs: g.typeArgList(n)}
	b := g.selfBindings(n)
	fields, which := memberNames(n)
	si.which = which
	if n.StructNode().DiscriminantCount() > 0 {
		d := fg.decl(n)
		si.whichTyp = d.which.name
		si.consts = d.whichConsts
		si.discOff = n.StructNode().DiscriminantOffset() * 2
	}
	owner := g.ownerName(n)
	for i, f := range n.fields() {
		fn, _ := f.Name()
		m := &member{schemaName: fn, name: fields[i], disc: f.DiscriminantValue(), doc: n.memberDoc(i)}
		switch f.Which() {
		case schema.Field_Which_slot:
			sl, err := g.newSlot(f, b, owner+"_"+fn)
			if err != nil {
				fg.fail(err)
				continue
			}
			m.sl = sl
		case schema.Field_Which_group:
			gn, err := g.lookup(f.Group().TypeId())
			if err != nil {
				fg.fail(err)
				continue
			}
			m.group = gn
		}
		si.members = append(si.members, m)
	}
	return si
}

// groupType returns the Go type of group field m, as a value.
func (fg *fileGen) groupType(m *member) string {
	return fg.decl(m.group).name + fg.g.typeArgList(m.group)
}

// genStruct generates struct (or group) n.
func (fg *fileGen) genStruct(n *node) {
	d := fg.decl(n)
	si := fg.structInfo(n, d.name)
	id := fmt.Sprintf("%#x", n.id)
	if n.isGroup() {
		fg.p("// %s is the Go form of the group %s (@%s): its fields are stored in the\n// struct of %s.\n", d.name, n.path(), id, n.parent.path())
	} else {
		fg.p("// %s is the Go form of the Cap'n Proto struct %s (@%s).\n", d.name, n.path(), id)
		if doc := docComment(n.doc, "", ""); doc != "" {
			fg.p("//\n%s", doc)
		}
	}
	if d.rename != "" {
		fg.p("//\n// %s\n", d.rename)
	}
	fg.genStructBody(si)
	if !n.isGroup() {
		fg.genNew(si, d.newFunc)
	}
}

// genStructBody generates a struct's type, its Which type and its
// methods.
func (fg *fileGen) genStructBody(si *structInfo) {
	fg.useCapnp()
	fg.p("type %s%s struct {\n", si.name, si.tparams)
	whichDone := false
	for _, m := range si.members {
		if m.inUnion() && !whichDone {
			whichDone = true
			fg.p("// %s says which member of the union is set.\n", si.which.name)
			if si.which.rename != "" {
				fg.p("// %s\n", si.which.rename)
			}
			fg.p("%s %s\n", si.which.name, si.whichTyp)
		}
		if m.name.name == "" {
			continue
		}
		if doc := docComment(m.doc, m.schemaName, m.name.name); doc != "" {
			fg.p("%s", doc)
		}
		if m.name.rename != "" {
			fg.p("// %s\n", m.name.rename)
		}
		if m.group != nil {
			fg.p("%s %s\n", m.name.name, fg.groupType(m))
		} else {
			fg.p("%s %s\n", m.name.name, fg.goType(m.sl.t))
		}
	}
	fg.p("}\n\n")
	if si.hasUnion() {
		fg.genWhich(si)
	}
	recv := si.name + si.targs
	size := structSize(si.n)
	fg.p("// CapnpSize, EncodeCapnp and DecodeCapnp make *%s an mp.Struct.\n", si.name)
	fg.p("func (*%s) CapnpSize() capnp.ObjectSize {\nreturn capnp.ObjectSize{DataSize: %d, PointerCount: %d}\n}\n\n", recv, size[0], size[1])
	fg.genEncode(si, recv)
	fg.genDecode(si, recv)
}

// genWhich generates the type of a union's discriminant.
func (fg *fileGen) genWhich(si *structInfo) {
	d := fg.decl(si.n)
	fg.p("// %s is the discriminant of the union of %s: which member is set.\n", si.whichTyp, si.n.path())
	if d.which.rename != "" {
		fg.p("//\n// %s\n", d.which.rename)
	}
	fg.p("type %s uint16\n\n", si.whichTyp)
	discs := make([]uint16, 0, len(si.consts))
	for v := range si.consts {
		discs = append(discs, v)
	}
	sort.Slice(discs, func(i, j int) bool { return discs[i] < discs[j] })
	names := map[uint16]string{}
	for _, m := range si.members {
		if m.inUnion() {
			names[m.disc] = m.schemaName
		}
	}
	fg.p("// The members of the union of %s.\nconst (\n", si.n.path())
	for _, v := range discs {
		c := si.consts[v]
		if c.rename != "" {
			fg.p("// %s\n", c.rename)
		}
		fg.p("%s %s = %d\n", c.name, si.whichTyp, v)
	}
	fg.p(")\n\n")
	fg.useStrconv()
	fg.p("// String returns the name of the member in the schema.\nfunc (w %s) String() string {\nswitch w {\n", si.whichTyp)
	for _, v := range discs {
		fg.p("case %s:\nreturn %q\n", si.consts[v].name, names[v])
	}
	fg.p("}\nreturn \"%s(\" + strconv.Itoa(int(w)) + \")\"\n}\n\n", si.whichTyp)
}

func (fg *fileGen) genEncode(si *structInfo, recv string) {
	fg.p("func (v *%s) EncodeCapnp(e *mp.Encoder, s capnp.Struct) error {\n", recv)
	encodeMember := func(m *member) {
		if m.group != nil {
			fg.p("if err := v.%s.EncodeCapnp(e, s); err != nil {\nreturn err\n}\n", m.name.name)
			return
		}
		stmt, fallible := fg.encode(m.sl, "s", "e", "v."+m.name.name)
		switch {
		case stmt == "":
		case fallible:
			fg.p("if err := %s; err != nil {\nreturn err\n}\n", stmt)
		default:
			fg.p("%s\n", stmt)
		}
	}
	for _, m := range si.members {
		if !m.inUnion() {
			encodeMember(m)
		}
	}
	if si.hasUnion() {
		fg.p("s.SetUint16(%d, uint16(v.%s))\n", si.discOff, si.which.name)
		fg.p("switch v.%s {\n", si.which.name)
		for _, m := range si.members {
			if m.inUnion() {
				fg.p("case %s:\n", si.consts[m.disc].name)
				encodeMember(m)
			}
		}
		fg.p("}\n")
	}
	fg.p("return nil\n}\n\n")
}

func (fg *fileGen) genDecode(si *structInfo, recv string) {
	fg.p("func (v *%s) DecodeCapnp(d *mp.Decoder, s capnp.Struct) error {\n", recv)
	var body strings.Builder
	needErr := false
	decodeMember := func(m *member) {
		if m.group != nil {
			fmt.Fprintf(&body, "if err := v.%s.DecodeCapnp(d, s); err != nil {\nreturn err\n}\n", m.name.name)
			return
		}
		expr, fallible := fg.decode(m.sl, "s", "d")
		switch {
		case expr == "":
		case fallible:
			needErr = true
			fmt.Fprintf(&body, "if v.%s, err = %s; err != nil {\nreturn err\n}\n", m.name.name, expr)
		default:
			fmt.Fprintf(&body, "v.%s = %s\n", m.name.name, expr)
		}
	}
	for _, m := range si.members {
		if !m.inUnion() {
			decodeMember(m)
		}
	}
	if si.hasUnion() {
		fmt.Fprintf(&body, "v.%s = %s(s.Uint16(%d))\n", si.which.name, si.whichTyp, si.discOff)
		fmt.Fprintf(&body, "switch v.%s {\n", si.which.name)
		for _, m := range si.members {
			if m.inUnion() {
				fmt.Fprintf(&body, "case %s:\n", si.consts[m.disc].name)
				decodeMember(m)
			}
		}
		body.WriteString("}\n")
		// Members share storage: the ones not set must not keep what an
		// earlier decode left.
		fg.p("*v = %s%s{}\n", si.name, si.targs)
	}
	if needErr {
		fg.p("var err error\n")
	}
	fg.p("%sreturn nil\n}\n\n", body.String())
}

// genNew generates NewS.
func (fg *fileGen) genNew(si *structInfo, nf named) {
	fg.p("// %s returns %s %s holding the schema's defaults: what a struct that\n// was never written reads as.\n", nf.name, article(si.name), si.name)
	if nf.rename != "" {
		fg.p("//\n// %s\n", nf.rename)
	}
	fg.p("func %s%s() *%s%s {\n", nf.name, si.tparams, si.name, si.targs)
	fields := fg.defaultFields(si)
	if len(fields) == 0 {
		fg.p("return &%s%s{}\n}\n\n", si.name, si.targs)
		return
	}
	fg.p("return &%s%s{\n%s}\n}\n\n", si.name, si.targs, strings.Join(fields, ""))
}

// defaultFields returns the keyed elements of a composite literal of
// si's type holding its defaults: the fields outside the union, and the
// union member whose discriminant is zero (a struct never written
// selects it).
func (fg *fileGen) defaultFields(si *structInfo) []string {
	var out []string
	for _, m := range si.members {
		if m.name.name == "" || m.inUnion() && m.disc != 0 {
			continue
		}
		if m.group != nil {
			gd := fg.decl(m.group)
			gsi := fg.structInfo(m.group, gd.name)
			if gf := fg.defaultFields(gsi); len(gf) > 0 {
				out = append(out, fmt.Sprintf("%s: %s{\n%s},\n", m.name.name, fg.groupType(m), strings.Join(gf, "")))
			}
			continue
		}
		if v := fg.defaultValue(m.sl); v != "" {
			out = append(out, fmt.Sprintf("%s: %s,\n", m.name.name, v))
		}
	}
	return out
}

// genEnum generates enum n.
func (fg *fileGen) genEnum(n *node) {
	d := fg.decl(n)
	fg.p("// %s is the Go form of the Cap'n Proto enum %s (@%#x).\n", d.name, n.path(), n.id)
	if doc := docComment(n.doc, "", ""); doc != "" {
		fg.p("//\n%s", doc)
	}
	if d.rename != "" {
		fg.p("//\n// %s\n", d.rename)
	}
	fg.p("type %s uint16\n\n", d.name)
	es, _ := n.Enum().Enumerants()
	names := make([]string, es.Len())
	fg.p("// The enumerants of %s.\nconst (\n", n.path())
	for i := 0; i < es.Len(); i++ {
		names[i], _ = es.At(i).Name()
		c := d.enumerants[i]
		if doc := docComment(n.memberDoc(i), names[i], c.name); doc != "" {
			fg.p("%s", doc)
		}
		if c.rename != "" {
			fg.p("// %s\n", c.rename)
		}
		fg.p("%s %s = %d\n", c.name, d.name, i)
	}
	fg.p(")\n\n")
	fg.useStrconv()
	fg.p("// String returns the enumerant's name in the schema.\nfunc (x %s) String() string {\nswitch x {\n", d.name)
	for i, c := range d.enumerants {
		fg.p("case %s:\nreturn %q\n", c.name, names[i])
	}
	fg.p("}\nreturn \"%s(\" + strconv.Itoa(int(x)) + \")\"\n}\n\n", d.name)
}

// genConst generates const n.
func (fg *fileGen) genConst(n *node) {
	d := fg.decl(n)
	st, err := n.Const().Type()
	if err != nil {
		fg.fail(err)
		return
	}
	t, err := fg.g.resolve(st, bindings{})
	if err != nil {
		fg.fail(err)
		return
	}
	v, err := n.Const().Value()
	if err != nil {
		fg.fail(err)
		return
	}
	doc := fmt.Sprintf("// %s is the Cap'n Proto const %s.\n", d.name, n.path())
	if sd := docComment(n.doc, "", ""); sd != "" {
		doc += "//\n" + sd
	}
	if d.rename != "" {
		doc += "//\n// " + d.rename + "\n"
	}
	switch t.kind {
	case kVoid, kInterface, kCapability:
		return // nothing to declare: the only value is void or null
	case kText:
		s, _ := v.Text()
		fg.p("%sconst %s = %q\n\n", doc, d.name, s)
	case kData:
		b, _ := v.Data()
		fg.p("%svar %s = %s\n\n", doc, d.name, bytesLiteral(b))
	case kList, kStruct, kAnyPointer:
		p, err := defaultPtr(t, v)
		if err != nil {
			fg.fail(err)
			return
		}
		if !p.IsValid() {
			fg.p("%svar %s %s\n\n", doc, d.name, fg.goType(t))
			return
		}
		b, err := canon.Encode(p)
		if err != nil {
			fg.fail(err)
			return
		}
		fg.p("%svar %s = mp.DecodeDefault(%s, %s)\n\n", doc, d.name, fg.codec(t), bytesLiteral(b))
	default:
		bits := scalarBits(t, v)
		lit := fg.scalarLiteral(t, bits)
		if (t.kind == kFloat32 || t.kind == kFloat64) && !isConstFloat(t, bits) {
			fg.p("%svar %s = %s\n\n", doc, d.name, lit)
			return
		}
		fg.p("%sconst %s %s = %s\n\n", doc, d.name, fg.goType(t), lit)
	}
}
