package main

import (
	"fmt"
	"strings"

	"capnproto.org/go/capnp/v3/std/capnp/schema"
)

// kind is the kind of a capnp type, as mpgen maps it.
type kind uint8

const (
	kVoid kind = iota
	kBool
	kInt8
	kInt16
	kInt32
	kInt64
	kUint8
	kUint16
	kUint32
	kUint64
	kFloat32
	kFloat64
	kText
	kData
	kList
	kEnum
	kStruct
	kInterface
	kAnyPointer // AnyPointer, AnyStruct, AnyList, unbound and method parameters
	kCapability
	kParam // a generic parameter
)

// A typ is a capnp type resolved in a generic context: its parameters
// bound to types, or to the Go type parameters of the declaration being
// generated.
type typ struct {
	kind  kind
	elem  *typ   // kList
	node  *node  // kEnum, kStruct, kInterface
	args  []*typ // kStruct, kInterface: the generic arguments of node's chain
	pnode *node  // kParam: the declaration whose Go type parameter it is
	pidx  int    // kParam: which of pnode's type parameters
	bound *typ   // kParam: the type it is bound to, when substituted
	any   string // kAnyPointer: AnyPointer, AnyStruct or AnyList
}

var scalarKinds = map[schema.Type_Which]kind{
	schema.Type_Which_void: kVoid, schema.Type_Which_bool: kBool,
	schema.Type_Which_int8: kInt8, schema.Type_Which_int16: kInt16, schema.Type_Which_int32: kInt32, schema.Type_Which_int64: kInt64,
	schema.Type_Which_uint8: kUint8, schema.Type_Which_uint16: kUint16, schema.Type_Which_uint32: kUint32, schema.Type_Which_uint64: kUint64,
	schema.Type_Which_float32: kFloat32, schema.Type_Which_float64: kFloat64,
	schema.Type_Which_text: kText, schema.Type_Which_data: kData,
}

// goScalar is the Go type of each scalar kind; capnpScalar its capnp
// name.
var goScalar = map[kind]string{
	kBool: "bool", kInt8: "int8", kInt16: "int16", kInt32: "int32", kInt64: "int64",
	kUint8: "uint8", kUint16: "uint16", kUint32: "uint32", kUint64: "uint64",
	kFloat32: "float32", kFloat64: "float64", kText: "string", kData: "[]byte",
}

var capnpScalar = map[kind]string{
	kVoid: "Void", kBool: "Bool", kInt8: "Int8", kInt16: "Int16", kInt32: "Int32", kInt64: "Int64",
	kUint8: "UInt8", kUint16: "UInt16", kUint32: "UInt32", kUint64: "UInt64",
	kFloat32: "Float32", kFloat64: "Float64", kText: "Text", kData: "Data",
}

// size returns the size in bytes of a data-section kind (0 for pointers;
// bools are bits).
func (t *typ) size() uint32 {
	switch t.kind {
	case kInt8, kUint8:
		return 1
	case kInt16, kUint16, kEnum:
		return 2
	case kInt32, kUint32, kFloat32:
		return 4
	case kInt64, kUint64, kFloat64:
		return 8
	}
	return 0
}

// isCap reports whether t is a capability type (for pipelining).
func (t *typ) isCap() bool {
	return t.kind == kInterface || t.kind == kCapability
}

// hasParam reports whether t mentions a Go type parameter: its codec can
// only be found at run time.
func (t *typ) hasParam() bool {
	if t == nil {
		return false
	}
	if t.kind == kParam {
		if t.bound != nil {
			return t.bound.hasParam()
		}
		return true
	}
	if t.elem.hasParam() {
		return true
	}
	for _, a := range t.args {
		if a.hasParam() {
			return true
		}
	}
	return false
}

// hasGenericIface reports whether t mentions an instance of a generic
// interface, whose description is made on first use (and so cannot be in
// a package-level codec variable without risking an initialization
// cycle).
func (t *typ) hasGenericIface() bool {
	if t == nil {
		return false
	}
	if t.kind == kInterface && len(t.args) > 0 {
		return true
	}
	if t.kind == kParam {
		return t.bound.hasGenericIface()
	}
	if t.elem.hasGenericIface() {
		return true
	}
	for _, a := range t.args {
		if a.hasGenericIface() {
			return true
		}
	}
	return false
}

// bindings maps the generic parameters visible in a context to types.
type bindings map[paramKey]*typ

type paramKey struct {
	scope uint64
	index uint16
}

// resolve maps a capnp type to a typ in the context b.
func (g *gen) resolve(t schema.Type, b bindings) (*typ, error) {
	if k, ok := scalarKinds[t.Which()]; ok {
		return &typ{kind: k}, nil
	}
	switch t.Which() {
	case schema.Type_Which_list:
		et, err := t.List().ElementType()
		if err != nil {
			return nil, err
		}
		elem, err := g.resolve(et, b)
		if err != nil {
			return nil, err
		}
		return &typ{kind: kList, elem: elem}, nil
	case schema.Type_Which_enum:
		n, err := g.lookup(t.Enum().TypeId())
		if err != nil {
			return nil, err
		}
		return &typ{kind: kEnum, node: n}, nil
	case schema.Type_Which_structType:
		n, err := g.lookup(t.StructType().TypeId())
		if err != nil {
			return nil, err
		}
		br, _ := t.StructType().Brand()
		args, err := g.applyBrand(n, br, b)
		if err != nil {
			return nil, err
		}
		return &typ{kind: kStruct, node: n, args: args}, nil
	case schema.Type_Which_interface:
		n, err := g.lookup(t.Interface().TypeId())
		if err != nil {
			return nil, err
		}
		br, _ := t.Interface().Brand()
		args, err := g.applyBrand(n, br, b)
		if err != nil {
			return nil, err
		}
		return &typ{kind: kInterface, node: n, args: args}, nil
	case schema.Type_Which_anyPointer:
		ap := t.AnyPointer()
		switch ap.Which() {
		case schema.Type_anyPointer_Which_unconstrained:
			switch ap.Unconstrained().Which() {
			case schema.Type_anyPointer_unconstrained_Which_struct:
				return &typ{kind: kAnyPointer, any: "AnyStruct"}, nil
			case schema.Type_anyPointer_unconstrained_Which_list:
				return &typ{kind: kAnyPointer, any: "AnyList"}, nil
			case schema.Type_anyPointer_unconstrained_Which_capability:
				return &typ{kind: kCapability}, nil
			}
			return &typ{kind: kAnyPointer, any: "AnyPointer"}, nil
		case schema.Type_anyPointer_Which_parameter:
			p := ap.Parameter()
			if bt, ok := b[paramKey{p.ScopeId(), p.ParameterIndex()}]; ok {
				return bt, nil
			}
			return nil, fmt.Errorf("generic parameter %d of %s is not in scope", p.ParameterIndex(), g.nodeName(p.ScopeId()))
		case schema.Type_anyPointer_Which_implicitMethodParameter:
			// Generic methods' own parameters: SPEC.md maps them to
			// AnyPointer.
			return &typ{kind: kAnyPointer, any: "AnyPointer"}, nil
		}
	}
	return nil, fmt.Errorf("unsupported type %v", t.Which())
}

func (g *gen) lookup(id uint64) (*node, error) {
	n := g.rq.nodes[id]
	if n == nil {
		return nil, fmt.Errorf("node %#x is missing from the request", id)
	}
	return n, nil
}

func (g *gen) nodeName(id uint64) string {
	if n := g.rq.nodes[id]; n != nil {
		return n.path()
	}
	return fmt.Sprintf("@%#x", id)
}

// applyBrand returns the generic arguments of n's chain under brand, in
// the context b: bound types, the context's own for `inherit`, and
// AnyPointer for unbound parameters.
func (g *gen) applyBrand(n *node, brand schema.Brand, b bindings) ([]*typ, error) {
	chain := n.genericChain()
	if len(chain) == 0 {
		return nil, nil
	}
	scopes := map[uint64]schema.Brand_Scope{}
	if brand.IsValid() {
		sl, err := brand.Scopes()
		if err != nil {
			return nil, err
		}
		for i := 0; i < sl.Len(); i++ {
			scopes[sl.At(i).ScopeId()] = sl.At(i)
		}
	}
	var args []*typ
	for _, c := range chain {
		nparams := len(c.paramNames())
		sc, ok := scopes[c.id]
		switch {
		case !ok:
			for i := 0; i < nparams; i++ {
				args = append(args, &typ{kind: kAnyPointer, any: "AnyPointer"})
			}
		case sc.Which() == schema.Brand_Scope_Which_inherit:
			for i := 0; i < nparams; i++ {
				bt, ok := b[paramKey{c.id, uint16(i)}]
				if !ok {
					bt = &typ{kind: kAnyPointer, any: "AnyPointer"}
				}
				args = append(args, bt)
			}
		default:
			bl, err := sc.Bind()
			if err != nil {
				return nil, err
			}
			for i := 0; i < nparams; i++ {
				if i >= bl.Len() || bl.At(i).Which() == schema.Brand_Binding_Which_unbound {
					args = append(args, &typ{kind: kAnyPointer, any: "AnyPointer"})
					continue
				}
				bt, err := bl.At(i).Type()
				if err != nil {
					return nil, err
				}
				r, err := g.resolve(bt, b)
				if err != nil {
					return nil, err
				}
				args = append(args, r)
			}
		}
	}
	return args, nil
}

// selfBindings returns the context inside n's own declaration: its
// chain's parameters bound to the Go type parameters of n's type.
func (g *gen) selfBindings(n *node) bindings {
	b := implicitBindings(n, bindings{})
	i := 0
	for _, c := range n.genericChain() {
		for j := range c.paramNames() {
			b[paramKey{c.id, uint16(j)}] = &typ{kind: kParam, pnode: n, pidx: i}
			i++
		}
	}
	return b
}

// implicitBindings returns b with the parameters of a generic method's
// implicit struct n bound to AnyPointer, as SPEC.md maps them.
func implicitBindings(n *node, b bindings) bindings {
	if !n.isImplicit() {
		return b
	}
	ps := n.paramNames()
	if len(ps) == 0 {
		return b
	}
	out := bindings{}
	for k, v := range b {
		out[k] = v
	}
	for i := range ps {
		out[paramKey{n.id, uint16(i)}] = &typ{kind: kAnyPointer, any: "AnyPointer"}
	}
	return out
}

// substBindings returns the context in which the members of n (an
// interface or struct) are seen with its chain bound to args.
func substBindings(n *node, args []*typ) bindings {
	b := bindings{}
	i := 0
	for _, c := range n.genericChain() {
		for j := range c.paramNames() {
			var a *typ
			if i < len(args) {
				a = args[i]
			} else {
				a = &typ{kind: kAnyPointer, any: "AnyPointer"}
			}
			b[paramKey{c.id, uint16(j)}] = &typ{kind: kParam, bound: a}
			i++
		}
	}
	return b
}

// typeParams returns the Go type parameters of n's type: its chain's
// generic parameters, renamed where they would hide a package-level name,
// an import or a local of generated code.
func (g *gen) typeParams(n *node) []string {
	chain := n.genericChain()
	if len(chain) == 0 {
		return nil
	}
	// Nodes that see the same parameters (a struct, its groups, the
	// structs of an interface's methods) name them alike.
	key := chain[len(chain)-1]
	if ps, ok := g.tparams[key]; ok {
		return ps
	}
	var out []string
	seen := map[string]bool{}
	for _, c := range chain {
		for _, p := range c.paramNames() {
			name := localName(p, func(s string) bool { return seen[s] || g.pkgTaken(s) })
			seen[name] = true
			out = append(out, name)
		}
	}
	g.tparams[key] = out
	return out
}

// typeParamList returns "[A, B any]" for n's type, or "".
func (g *gen) typeParamList(n *node) string {
	ps := g.typeParams(n)
	if len(ps) == 0 {
		return ""
	}
	return "[" + strings.Join(ps, ", ") + " any]"
}

// typeArgList returns "[A, B]" for n's type inside its own declaration,
// or "".
func (g *gen) typeArgList(n *node) string {
	ps := g.typeParams(n)
	if len(ps) == 0 {
		return ""
	}
	return "[" + strings.Join(ps, ", ") + "]"
}

// goType returns the Go type of values of t, as written in fg's file:
// struct fields, parameters and results.
func (fg *fileGen) goType(t *typ) string {
	switch t.kind {
	case kList:
		return "[]" + fg.elemType(t.elem)
	case kEnum:
		return fg.qual(t.node)
	case kStruct:
		return "*" + fg.nodeType(t.node, t.args)
	case kInterface:
		if len(t.args) > 0 && !t.hasParam() {
			fg.instances[fg.ifaceExpr(t)] = true
		}
		return fg.nodeType(t.node, t.args)
	case kAnyPointer:
		return "mp.AnyPointer"
	case kCapability:
		return "*mp.Client"
	case kParam:
		if t.bound != nil {
			return fg.goType(t.bound)
		}
		return fg.g.typeParams(t.pnode)[t.pidx]
	case kVoid:
		return "struct{}"
	}
	return goScalar[t.kind]
}

// elemType returns the Go type of the elements of a list of t: structs
// by value (a list of structs is a composite list).
func (fg *fileGen) elemType(t *typ) string {
	if t.kind == kStruct {
		return fg.nodeType(t.node, t.args)
	}
	return fg.goType(t)
}

// nodeType returns the Go type of node n (a struct by value) with the
// generic arguments args.
func (fg *fileGen) nodeType(n *node, args []*typ) string {
	s := fg.qual(n)
	if len(args) > 0 {
		as := make([]string, len(args))
		for i, a := range args {
			as[i] = fg.goType(a)
		}
		s += "[" + strings.Join(as, ", ") + "]"
	}
	return s
}

// qual returns the name of n's Go declaration as fg's file refers to it.
func (fg *fileGen) qual(n *node) string {
	return fg.qualName(n, fg.decl(n).name)
}

// qualName returns name, a declaration of n's file, as fg's file refers
// to it: qualified by the package alias if n's file is generated
// elsewhere.
func (fg *fileGen) qualName(n *node, name string) string {
	if n.file.requested {
		return name
	}
	alias := fg.importFile(n.file)
	return alias + "." + name
}

// decl returns the names of n's declarations.
func (fg *fileGen) decl(n *node) *decl {
	nm, err := fg.g.fileNames(n.file)
	if err != nil {
		fg.fail(err)
		return &decl{name: "invalid"}
	}
	d := nm.decls[n.id]
	if d == nil {
		fg.fail(fmt.Errorf("%s has no Go declaration", n.path()))
		return &decl{name: "invalid"}
	}
	return d
}

// zero returns the zero value of Go type t, as an expression.
func (fg *fileGen) zero(t *typ) string {
	switch t.kind {
	case kBool:
		return "false"
	case kText:
		return `""`
	case kData, kList, kStruct, kInterface, kCapability:
		return "nil"
	case kAnyPointer:
		return "mp.AnyPointer{}"
	case kParam:
		if t.bound != nil {
			return fg.zero(t.bound)
		}
		return "*new(" + fg.goType(t) + ")"
	}
	return "0"
}

// mangle returns an identifier fragment naming t, for codec variables.
func (fg *fileGen) mangle(t *typ) string {
	switch t.kind {
	case kList:
		return "List_" + fg.mangle(t.elem)
	case kEnum, kStruct, kInterface:
		s := strings.ReplaceAll(fg.qual(t.node), ".", "_")
		for _, a := range t.args {
			s += "_" + fg.mangle(a)
		}
		return s
	case kAnyPointer:
		return t.any
	case kCapability:
		return "Capability"
	case kParam:
		if t.bound != nil {
			return fg.mangle(t.bound)
		}
		return fg.goType(t)
	}
	return capnpScalar[t.kind]
}
