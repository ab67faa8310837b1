package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/std/capnp/schema"
)

// A node is one node of the request (file, struct, group, enum,
// interface, const, annotation) with what mpgen learned about it.
type node struct {
	schema.Node
	id     uint64
	name   string // its name in its scope ("Inner" for Outer.Inner); "" for files
	parent *node  // the scope it is declared in; nil for files
	file   *file
	doc    string   // the doc comment
	member []string // the doc comments of its fields, enumerants or methods, by index

	// For the implicit parameter and result structs of a method: the
	// interface and the method's index.
	iface  *node
	method int
}

// A file is a schema file of the request.
type file struct {
	node      *node
	name      string   // as capnp names it: "mp/proxy.capnp", "../x/chain.capnp"
	imports   []string // how requested files import it: "/mp/proxy.capnp"
	requested bool

	// Set for requested files: the generated file's path.
	outPath string

	// Set for files generated elsewhere whose types are used: the Go
	// import path (from -M).
	goImport string

	names *names // computed on first use
}

// base returns the file's base name: "chain.capnp".
func (f *file) base() string {
	n := f.name
	if i := strings.LastIndexByte(n, '/'); i >= 0 {
		n = n[i+1:]
	}
	return n
}

// request is the CodeGeneratorRequest, indexed.
type request struct {
	nodes     map[uint64]*node
	files     []*file // every file, requested ones first, in request order
	requested []*file
}

// readRequest reads a CodeGeneratorRequest (stream framing) from r.
func readRequest(r io.Reader) (*request, error) {
	msg, err := capnp.NewDecoder(r).Decode()
	if err != nil {
		return nil, fmt.Errorf("reading the CodeGeneratorRequest: %w", err)
	}
	msg.ResetReadLimit(math.MaxUint64)
	req, err := schema.ReadRootCodeGeneratorRequest(msg)
	if err != nil {
		return nil, fmt.Errorf("reading the CodeGeneratorRequest: %w", err)
	}
	rq := &request{nodes: make(map[uint64]*node)}
	nodes, err := req.Nodes()
	if err != nil {
		return nil, err
	}
	for i := 0; i < nodes.Len(); i++ {
		n := nodes.At(i)
		rq.nodes[n.Id()] = &node{Node: n, id: n.Id(), method: -1}
	}
	if err := rq.readSourceInfo(req); err != nil {
		return nil, err
	}
	byID := make(map[uint64]*file)
	reqFiles, err := req.RequestedFiles()
	if err != nil {
		return nil, err
	}
	for i := 0; i < reqFiles.Len(); i++ {
		rf := reqFiles.At(i)
		n := rq.nodes[rf.Id()]
		if n == nil {
			return nil, fmt.Errorf("requested file %#x is not among the nodes", rf.Id())
		}
		f := rq.fileOf(n, byID)
		f.requested = true
		rq.requested = append(rq.requested, f)
		imps, err := rf.Imports()
		if err != nil {
			return nil, err
		}
		for j := 0; j < imps.Len(); j++ {
			imp := imps.At(j)
			in := rq.nodes[imp.Id()]
			if in == nil {
				continue
			}
			name, _ := imp.Name()
			ifile := rq.fileOf(in, byID)
			ifile.imports = append(ifile.imports, name)
		}
	}
	for _, n := range rq.nodes {
		if n.Which() == schema.Node_Which_file {
			rq.fileOf(n, byID)
		}
	}
	// Scopes: every node below its file, by nested nodes, groups and the
	// implicit structs of methods.
	for _, f := range rq.files {
		if err := rq.link(f.node, f); err != nil {
			return nil, err
		}
	}
	return rq, nil
}

func (rq *request) fileOf(n *node, byID map[uint64]*file) *file {
	if f := byID[n.id]; f != nil {
		return f
	}
	name, _ := n.DisplayName()
	f := &file{node: n, name: name}
	n.file = f
	byID[n.id] = f
	rq.files = append(rq.files, f)
	return f
}

func (rq *request) readSourceInfo(req schema.CodeGeneratorRequest) error {
	infos, err := req.SourceInfo()
	if err != nil {
		return err
	}
	for i := 0; i < infos.Len(); i++ {
		si := infos.At(i)
		n := rq.nodes[si.Id()]
		if n == nil {
			continue
		}
		n.doc, _ = si.DocComment()
		members, err := si.Members()
		if err != nil {
			return err
		}
		n.member = make([]string, members.Len())
		for j := range n.member {
			n.member[j], _ = members.At(j).DocComment()
		}
	}
	return nil
}

// link sets the scope of the nodes declared in n, recursively.
func (rq *request) link(n *node, f *file) error {
	n.file = f
	nested, err := n.NestedNodes()
	if err != nil {
		return err
	}
	for i := 0; i < nested.Len(); i++ {
		nn := nested.At(i)
		c := rq.nodes[nn.Id()]
		if c == nil {
			continue // capnp leaves out nodes of files that are not loaded
		}
		c.name, _ = nn.Name()
		c.parent = n
		if err := rq.link(c, f); err != nil {
			return err
		}
	}
	switch n.Which() {
	case schema.Node_Which_structNode:
		fields, err := n.StructNode().Fields()
		if err != nil {
			return err
		}
		for i := 0; i < fields.Len(); i++ {
			fl := fields.At(i)
			if fl.Which() != schema.Field_Which_group {
				continue
			}
			g := rq.nodes[fl.Group().TypeId()]
			if g == nil {
				return fmt.Errorf("%s: the group of field %d is missing from the request", n.displayName(), i)
			}
			g.name, _ = fl.Name()
			g.parent = n
			if err := rq.link(g, f); err != nil {
				return err
			}
		}
	case schema.Node_Which_interface:
		methods, err := n.Interface().Methods()
		if err != nil {
			return err
		}
		for i := 0; i < methods.Len(); i++ {
			m := methods.At(i)
			for _, id := range []uint64{m.ParamStructType(), m.ResultStructType()} {
				s := rq.nodes[id]
				if s == nil || s.ScopeId() != 0 {
					continue // a named struct, declared where it is
				}
				s.iface, s.method, s.file = n, i, f
			}
		}
	}
	return nil
}

func (n *node) displayName() string {
	dn, _ := n.DisplayName()
	return dn
}

// path is the node's name in its file for messages: "Outer.Inner", or
// "Iface.method$Params".
func (n *node) path() string {
	dn := n.displayName()
	if i := strings.IndexByte(dn, ':'); i >= 0 {
		return dn[i+1:]
	}
	return dn
}

// isImplicit reports whether n is the implicit parameter or result struct
// of a method.
func (n *node) isImplicit() bool { return n.iface != nil }

// isGroup reports whether n is a group.
func (n *node) isGroup() bool {
	return n.Which() == schema.Node_Which_structNode && n.StructNode().IsGroup()
}

// scopeParent returns the node whose generic parameters n sees beside
// its own: its parent, or for an implicit method struct the interface.
func (n *node) scopeParent() *node {
	if n.iface != nil {
		return n.iface
	}
	if n.parent != nil && n.parent.Which() != schema.Node_Which_file {
		return n.parent
	}
	return nil
}

// paramNames returns n's own generic parameters.
func (n *node) paramNames() []string {
	ps, err := n.Parameters()
	if err != nil {
		return nil
	}
	out := make([]string, ps.Len())
	for i := range out {
		out[i], _ = ps.At(i).Name()
	}
	return out
}

// genericChain returns the nodes whose generic parameters n's Go type
// takes, outermost first: its generic ancestors and itself.
func (n *node) genericChain() []*node {
	var chain []*node
	for x := n; x != nil; x = x.scopeParent() {
		// The implicit structs of a generic method (`m @0 [T] (x :T)`)
		// have its parameters, which mpgen maps to AnyPointer (see
		// implicitBindings).
		if len(x.paramNames()) > 0 && !x.isImplicit() {
			chain = append(chain, x)
		}
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	return chain
}

// fields returns a struct node's fields.
func (n *node) fields() []schema.Field {
	fl, err := n.StructNode().Fields()
	if err != nil {
		return nil
	}
	out := make([]schema.Field, fl.Len())
	for i := range out {
		out[i] = fl.At(i)
	}
	return out
}

// methods returns an interface node's methods.
func (n *node) methods() []schema.Method {
	ms, err := n.Interface().Methods()
	if err != nil {
		return nil
	}
	out := make([]schema.Method, ms.Len())
	for i := range out {
		out[i] = ms.At(i)
	}
	return out
}

// memberDoc returns the doc comment of member i.
func (n *node) memberDoc(i int) string {
	if i < len(n.member) {
		return n.member[i]
	}
	return ""
}

// children returns the nodes declared in n that mpgen generates code
// for, in declaration order: nested nodes, then groups.
func (rq *request) children(n *node) []*node {
	var out []*node
	nested, _ := n.NestedNodes()
	for i := 0; i < nested.Len(); i++ {
		if c := rq.nodes[nested.At(i).Id()]; c != nil {
			out = append(out, c)
		}
	}
	if n.Which() == schema.Node_Which_structNode {
		for _, fl := range n.fields() {
			if fl.Which() == schema.Field_Which_group {
				if g := rq.nodes[fl.Group().TypeId()]; g != nil {
					out = append(out, g)
				}
			}
		}
	}
	return out
}
