package main

import (
	"fmt"
	"strings"

	"capnproto.org/go/capnp/v3/std/capnp/schema"
	"capnproto.org/go/capnp/v3/std/capnp/stream"
)

// A method is one method of an interface, its types resolved in a
// context: the interface's own declaration, or an interface that inherits
// it with its generic parameters bound.
type method struct {
	iface  *node // the interface that declares it
	index  int   // its ID
	m      schema.Method
	name   string // in the schema
	goName string // in the Go interface
	rename string // why goName is not the obvious one, if it is not

	params     []*slot // the implicit parameter struct's fields, Void ones left out
	paramsType *typ    // the parameter struct, when it is a named struct

	results     []*slot // the implicit result struct's fields, Void ones left out
	resultsType *typ    // the result struct, when it is a named struct
	resultsNode *node   // the result struct's node
	several     bool    // several results: a Results struct
	stream      bool
	caps        []capResult // capability results, for pipelining
	args        []*typ      // the interface's generic arguments in this context
	paramsSize  [2]uint32   // data bytes, pointers
	resultsSize [2]uint32
}

// A capResult is a capability among a method's results.
type capResult struct {
	name string // the Go field name in the results
	t    *typ
	ptr  uint32 // its pointer index in the results struct
}

// An ancestor is an interface that another one extends, directly or not,
// with its generic arguments as the descendant binds them.
type ancestor struct {
	node    *node
	args    []*typ
	methods []*method
}

// A methodSet is an interface's own methods and those it inherits.
type methodSet struct {
	own       []*method
	ancestors []*ancestor // deduplicated, in depth-first order
	parents   []*ancestor // the direct superclasses
}

// methodSet returns n's methods, in n's own declaration's context.
func (g *gen) methodSet(n *node) (*methodSet, error) {
	if ms, ok := g.msets[n]; ok {
		return ms, nil
	}
	b := g.selfBindings(n)
	ms := &methodSet{}
	seen := map[uint64]string{} // ancestors, with their arguments
	var visit func(x *node, b bindings, direct bool) error
	visit = func(x *node, b bindings, direct bool) error {
		supers, err := x.Interface().Superclasses()
		if err != nil {
			return err
		}
		for i := 0; i < supers.Len(); i++ {
			sc := supers.At(i)
			sn, err := g.lookup(sc.Id())
			if err != nil {
				return err
			}
			br, _ := sc.Brand()
			args, err := g.applyBrand(sn, br, b)
			if err != nil {
				return fmt.Errorf("superclass %s: %w", sn.path(), err)
			}
			a := &ancestor{node: sn, args: args}
			if direct {
				ms.parents = append(ms.parents, a)
			}
			key := typeKeys(args)
			if prev, ok := seen[sn.id]; ok {
				if prev != key {
					return fmt.Errorf("unsupported: it extends %s twice, with different generic arguments", sn.path())
				}
				continue
			}
			seen[sn.id] = key
			sb := substBindings(sn, args)
			a.methods, err = g.methods(sn, sb, args)
			if err != nil {
				return err
			}
			ms.ancestors = append(ms.ancestors, a)
			if err := visit(sn, sb, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(n, b, true); err != nil {
		return nil, fmt.Errorf("%s: %w", n.path(), err)
	}
	own, err := g.methods(n, b, selfArgs(n, b))
	if err != nil {
		return nil, err
	}
	ms.own = own
	// Go names: an inherited method keeps the name its interface gives
	// it; an own method whose name an ancestor took (or that a proxy
	// needs: MPClient) is renamed.
	s := newScope()
	s.reserve("MPClient", "a method every proxy has")
	from := map[string]*node{}
	for _, a := range ms.ancestors {
		ams, err := g.methodSet(a.node)
		if err != nil {
			return nil, err
		}
		for i, m := range a.methods {
			m.goName, m.rename = ams.own[i].goName, ams.own[i].rename
			if prev := from[m.goName]; prev != nil && prev != a.node {
				return nil, fmt.Errorf("%s: unsupported: it inherits a method %s from both %s and %s", n.path(), m.goName, prev.path(), a.node.path())
			}
			from[m.goName] = a.node
			s.reserve(m.goName, "a method inherited from "+a.node.path())
		}
	}
	for _, m := range own {
		m.goName, m.rename = s.claim(title(m.name), "the method "+n.path()+"."+m.name)
	}
	g.msets[n] = ms
	return ms, nil
}

// selfArgs returns the generic arguments of n's chain in the context b.
func selfArgs(n *node, b bindings) []*typ {
	var args []*typ
	for _, c := range n.genericChain() {
		for j := range c.paramNames() {
			args = append(args, b[paramKey{c.id, uint16(j)}])
		}
	}
	return args
}

// methods resolves the methods that n declares in the context b, in
// which n's chain has the arguments args.
func (g *gen) methods(n *node, b bindings, args []*typ) ([]*method, error) {
	var out []*method
	for i, sm := range n.methods() {
		name, _ := sm.Name()
		m := &method{iface: n, index: i, m: sm, name: name, args: args}
		if err := g.resolveMethod(m, b); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", n.path(), name, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (g *gen) resolveMethod(m *method, b bindings) error {
	pn, err := g.lookup(m.m.ParamStructType())
	if err != nil {
		return err
	}
	rn, err := g.lookup(m.m.ResultStructType())
	if err != nil {
		return err
	}
	m.paramsSize = structSize(pn)
	m.resultsSize = structSize(rn)
	m.resultsNode = rn
	if pn.isImplicit() {
		b := implicitBindings(pn, b)
		for _, f := range pn.fields() {
			if f.Which() != schema.Field_Which_slot {
				return fmt.Errorf("parameter lists hold plain fields only")
			}
			if isVoid(f) {
				continue
			}
			fn, _ := f.Name()
			sl, err := g.newSlot(f, b, g.ownerName(pn)+"_"+fn)
			if err != nil {
				return err
			}
			m.params = append(m.params, sl)
		}
	} else {
		br, _ := m.m.ParamBrand()
		args, err := g.applyBrand(pn, br, b)
		if err != nil {
			return err
		}
		m.paramsType = &typ{kind: kStruct, node: pn, args: args}
	}
	switch {
	case rn.id == stream.StreamResult_TypeID:
		m.stream = true
	case rn.isImplicit():
		b := implicitBindings(rn, b)
		names, _ := memberNames(rn)
		for j, f := range rn.fields() {
			if f.Which() != schema.Field_Which_slot {
				return fmt.Errorf("result lists hold plain fields only")
			}
			if isVoid(f) {
				continue
			}
			fn, _ := f.Name()
			sl, err := g.newSlot(f, b, g.ownerName(rn)+"_"+fn)
			if err != nil {
				return err
			}
			m.results = append(m.results, sl)
			if sl.t.isCap() {
				m.caps = append(m.caps, capResult{name: names[j].name, t: sl.t, ptr: sl.off})
			}
		}
		m.several = len(m.results) > 1
	default:
		br, _ := m.m.ResultBrand()
		args, err := g.applyBrand(rn, br, b)
		if err != nil {
			return err
		}
		m.resultsType = &typ{kind: kStruct, node: rn, args: args}
		names, _ := memberNames(rn)
		sb := substBindings(rn, args)
		for j, f := range rn.fields() {
			if f.Which() != schema.Field_Which_slot || f.DiscriminantValue() != schema.Field_noDiscriminant || isVoid(f) {
				continue
			}
			sl, err := g.newSlot(f, sb, "")
			if err != nil {
				return err
			}
			if sl.t.isCap() {
				m.caps = append(m.caps, capResult{name: names[j].name, t: sl.t, ptr: sl.off})
			}
		}
	}
	return nil
}

// structSize returns a struct node's data bytes and pointer count.
func structSize(n *node) [2]uint32 {
	if n.Which() != schema.Node_Which_structNode {
		return [2]uint32{}
	}
	return [2]uint32{uint32(n.StructNode().DataWordCount()) * 8, uint32(n.StructNode().PointerCount())}
}

// ownerName returns a name for n to prefix default variables with: its
// path with dots as underscores.
func (g *gen) ownerName(n *node) string {
	return strings.NewReplacer(".", "_", "$", "_").Replace(n.path())
}

// typeKeys returns a string that is the same for equal lists of types.
func typeKeys(ts []*typ) string {
	var b strings.Builder
	var key func(t *typ)
	key = func(t *typ) {
		if t == nil {
			b.WriteString("nil")
			return
		}
		fmt.Fprintf(&b, "%d:%s(", t.kind, t.any)
		if t.node != nil {
			fmt.Fprintf(&b, "%x", t.node.id)
		}
		if t.pnode != nil {
			fmt.Fprintf(&b, "p%x.%d", t.pnode.id, t.pidx)
		}
		if t.elem != nil {
			key(t.elem)
		}
		if t.bound != nil {
			key(t.bound)
		}
		for _, a := range t.args {
			key(a)
			b.WriteString(",")
		}
		b.WriteString(")")
	}
	for _, t := range ts {
		key(t)
		b.WriteString(";")
	}
	return b.String()
}
