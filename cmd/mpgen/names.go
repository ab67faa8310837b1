package main

import (
	"fmt"
	"go/token"
	"strconv"
	"strings"

	"capnproto.org/go/capnp/v3/std/capnp/schema"
)

// title upper-cases the first letter of a capnp name: blockHash ->
// BlockHash.
func title(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// capitalize upper-cases the first letter of a sentence.
func capitalize(s string) string { return title(s) }

// lowerFirst lower-cases the first letter of a Go name.
func lowerFirst(s string) string {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return s
	}
	return string(s[0]-'A'+'a') + s[1:]
}

// predeclared are Go's predeclared identifiers: a parameter or type
// parameter of that name would hide what generated code refers to.
var predeclared = map[string]bool{
	"any": true, "bool": true, "byte": true, "comparable": true, "complex64": true, "complex128": true,
	"error": true, "float32": true, "float64": true, "int": true, "int8": true, "int16": true,
	"int32": true, "int64": true, "rune": true, "string": true, "uint": true, "uint8": true,
	"uint16": true, "uint32": true, "uint64": true, "uintptr": true, "true": true, "false": true,
	"iota": true, "nil": true, "append": true, "cap": true, "clear": true, "close": true,
	"complex": true, "copy": true, "delete": true, "imag": true, "len": true, "make": true,
	"max": true, "min": true, "new": true, "panic": true, "print": true, "println": true,
	"real": true, "recover": true,
}

// fixedImports are the packages generated code may import, by the name
// it uses for them.
var fixedImports = map[string]string{
	"context": "context",
	"capnp":   "capnproto.org/go/capnp/v3",
	"mp":      "github.com/gomultiprocess/multiprocess/mp",
	"math":    "math",
	"strconv": "strconv",
}

// locals are the names generated function bodies use for their own
// variables and receivers: parameters and type parameters must not take
// them.
var locals = map[string]bool{
	"ctx": true, "call": true, "err": true, "params": true, "res": true, "r": true, "e": true,
	"d": true, "p": true, "pl": true, "impl": true, "v": true, "s": true, "in": true, "x": true,
}

// localName returns a name for a parameter or type parameter that hides
// nothing generated code uses: not a keyword, predeclared identifier,
// local, imported package or one of taken.
func localName(name string, taken func(string) bool) string {
	ok := func(s string) bool {
		return !token.IsKeyword(s) && !predeclared[s] && !locals[s] && fixedImports[s] == "" && !taken(s)
	}
	if ok(name) {
		return name
	}
	for i := 1; ; i++ {
		c := name + "_"
		if i > 1 {
			c += strconv.Itoa(i)
		}
		if ok(c) {
			return c
		}
	}
}

// A scope is a set of Go names, each taken by one declaration; what it
// was taken by is kept for the comments on renamed declarations.
type scope struct {
	takenBy map[string]string
}

func newScope() *scope { return &scope{takenBy: make(map[string]string)} }

// claim takes want for what, or, if it is taken, the first free of want_,
// want_2, want_3...; it returns the name taken and, if it is not want, a
// comment saying why.
func (s *scope) claim(want, what string) (string, string) {
	if _, taken := s.takenBy[want]; !taken {
		s.takenBy[want] = what
		return want, ""
	}
	for i := 1; ; i++ {
		c := want + "_"
		if i > 1 {
			c += strconv.Itoa(i)
		}
		if _, taken := s.takenBy[c]; !taken {
			s.takenBy[c] = what
			return c, fmt.Sprintf("%s is named %s because %s is %s.", capitalize(what), c, want, s.takenBy[want])
		}
	}
}

// reserve takes name for what without renaming: for names that the
// runtime needs.
func (s *scope) reserve(name, what string) { s.takenBy[name] = what }

func (s *scope) taken(name string) bool {
	_, ok := s.takenBy[name]
	return ok
}

// A decl is the Go names of one schema node's declarations.
type decl struct {
	name   string // the type, const or var
	rename string // why name is not the obvious one, if it is not

	enumerants []named // enum constants, by enumerant index

	which       named            // the Which type of a struct or group with a union
	whichConsts map[uint16]named // its constants, by discriminant value
	newFunc     named            // NewS

	client, ifaceVar, methodsVar, unimpl named
	methods                              []methodDecl // by method index
}

// named is a generated name and, if it was renamed, why.
type named struct {
	name, rename string
}

// methodDecl is the Go names of one method's declarations.
type methodDecl struct {
	results  named // the Results struct, if the method has several results
	pipeline named // the Pipeline struct, if it has several capability results
	desc     string
	serve    string
}

// names are the Go names of one schema file's declarations.
type names struct {
	scope *scope
	decls map[uint64]*decl
}

// fileNames returns f's names, computing them on first use. They depend
// on f alone, so that code generated from another file in another run
// refers to them by the same names.
func (g *gen) fileNames(f *file) (*names, error) {
	if f.names != nil {
		return f.names, nil
	}
	nm := &names{scope: newScope(), decls: make(map[uint64]*decl)}
	f.names = nm
	// Names from the schema first: they are renamed only if two of them
	// collide.
	var order []*node
	var visit func(n *node, prefix string)
	visit = func(n *node, prefix string) {
		want := title(n.name)
		if prefix != "" {
			want = prefix + "_" + want
		}
		d := &decl{}
		nm.decls[n.id] = d
		order = append(order, n)
		d.name, d.rename = nm.scope.claim(want, kindName(n)+" "+n.path())
		if n.Which() == schema.Node_Which_enum {
			es, _ := n.Enum().Enumerants()
			for i := 0; i < es.Len(); i++ {
				en, _ := es.At(i).Name()
				c := named{}
				c.name, c.rename = nm.scope.claim(d.name+"_"+title(en), "the enumerant "+n.path()+"."+en)
				d.enumerants = append(d.enumerants, c)
			}
		}
		for _, c := range g.rq.children(n) {
			if c.Which() == schema.Node_Which_annotation {
				continue
			}
			visit(c, d.name)
		}
	}
	for _, c := range g.rq.children(f.node) {
		if c.Which() == schema.Node_Which_annotation {
			continue
		}
		visit(c, "")
	}
	// Then the names mpgen makes up.
	for _, n := range order {
		d := nm.decls[n.id]
		switch n.Which() {
		case schema.Node_Which_structNode:
			if n.StructNode().DiscriminantCount() > 0 {
				d.which = nm.claim(d.name+"_Which", "the union discriminant of "+n.path())
				d.whichConsts = make(map[uint16]named)
				for _, fl := range n.fields() {
					if dv := fl.DiscriminantValue(); dv != schema.Field_noDiscriminant {
						fn, _ := fl.Name()
						d.whichConsts[dv] = nm.claim(d.which.name+"_"+title(fn), "the discriminant value of "+n.path()+"."+fn)
					}
				}
			}
			if !n.isGroup() {
				d.newFunc = nm.claim("New"+d.name, "the constructor of "+n.path())
			}
		case schema.Node_Which_interface:
			d.client = nm.claim(d.name+"Client", "the proxy type of "+n.path())
			d.ifaceVar = nm.claim(d.name+"Interface", "the description of "+n.path())
			d.methodsVar = nm.claim(d.name+"Methods", "the method table of "+n.path())
			d.unimpl = nm.claim("Unimplemented"+d.name, "the unimplemented "+n.path())
			mset, err := g.methodSet(n)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			for i, m := range n.methods() {
				mname, _ := m.Name()
				md := methodDecl{}
				own := mset.own[i]
				if own.several {
					md.results = nm.claim(d.name+"_"+own.goName+"_Results", "the results of "+n.path()+"."+mname)
					nm.decls[own.resultsNode.id] = &decl{name: md.results.name, rename: md.results.rename}
				}
				if len(own.caps) > 1 {
					md.pipeline = nm.claim(d.name+"_"+own.goName+"_Pipeline", "the pipelined results of "+n.path()+"."+mname)
				}
				md.desc = nm.claim(lowerFirst(d.name)+"_"+mname, "the descriptor of "+n.path()+"."+mname).name
				md.serve = nm.claim("serve"+d.name+"_"+mname, "the server function of "+n.path()+"."+mname).name
				d.methods = append(d.methods, md)
			}
		}
	}
	return nm, nil
}

func (nm *names) claim(want, what string) named {
	n := named{}
	n.name, n.rename = nm.scope.claim(want, what)
	return n
}

// kindName names n's kind for messages and comments.
func kindName(n *node) string {
	switch n.Which() {
	case schema.Node_Which_structNode:
		if n.isGroup() {
			return "the group"
		}
		return "the struct"
	case schema.Node_Which_enum:
		return "the enum"
	case schema.Node_Which_interface:
		return "the interface"
	case schema.Node_Which_const:
		return "the const"
	}
	return "the node"
}

// memberNames returns the Go names of a struct's fields (by field index;
// "" for Void fields, which have none) and of its Which field, which are
// renamed if they collide with the methods the runtime needs or with
// each other.
func memberNames(n *node) (fields []named, which named) {
	s := newScope()
	for _, m := range []string{"CapnpSize", "EncodeCapnp", "DecodeCapnp"} {
		s.reserve(m, "a method that package mp needs")
	}
	fl := n.fields()
	fields = make([]named, len(fl))
	for i, f := range fl {
		if f.Which() == schema.Field_Which_slot && isVoid(f) {
			continue
		}
		fn, _ := f.Name()
		fields[i].name, fields[i].rename = s.claim(title(fn), "the field "+n.path()+"."+fn)
	}
	if n.StructNode().DiscriminantCount() > 0 {
		which.name, which.rename = s.claim("Which", "the union discriminant of "+n.path())
	}
	return fields, which
}

func isVoid(f schema.Field) bool {
	t, err := f.Slot().Type()
	return err == nil && t.Which() == schema.Type_Which_void
}

// packageName cleans a folder's base name into a Go package name.
func packageName(base string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "pkg" + s
	}
	if token.IsKeyword(s) || predeclared[s] {
		s += "_"
	}
	return s
}

// docComment formats a schema doc comment as Go comment lines, with a
// leading schema name replaced by its Go name.
func docComment(doc, schemaName, goName string) string {
	doc = strings.TrimRight(doc, "\n ")
	if doc == "" {
		return ""
	}
	if schemaName != "" && strings.HasPrefix(doc, schemaName+" ") {
		doc = goName + doc[len(schemaName):]
	}
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			b.WriteString("//\n")
			continue
		}
		b.WriteString("// " + l + "\n")
	}
	return b.String()
}
