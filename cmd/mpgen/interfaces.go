package main

import (
	"fmt"
	"strings"
)

// proxyNames are the names of a proxy type's generated methods.
type proxyNames struct {
	close     named
	pipelined map[methodKey]named // by declaring interface and method
}

type methodKey struct {
	iface uint64
	index int
}

// proxyNames returns the names of the generated methods of n's proxy:
// Close and the Pipelined variants, renamed where a method of the
// interface has the name.
func (g *gen) proxyNames(n *node, ms *methodSet) proxyNames {
	s := newScope()
	s.reserve("MPClient", "a method every proxy has")
	all := allMethods(ms)
	for _, m := range all {
		s.reserve(m.goName, "the method "+m.iface.path()+"."+m.name)
	}
	pn := proxyNames{pipelined: make(map[methodKey]named)}
	pn.close.name, pn.close.rename = s.claim("Close", "the method releasing the proxy")
	for _, m := range all {
		if len(m.caps) == 0 {
			continue
		}
		var nm named
		nm.name, nm.rename = s.claim(m.goName+"Pipelined", "the pipelined variant of "+m.iface.path()+"."+m.name)
		pn.pipelined[methodKey{m.iface.id, m.index}] = nm
	}
	return pn
}

// allMethods returns an interface's own methods, then those it inherits.
func allMethods(ms *methodSet) []*method {
	all := append([]*method(nil), ms.own...)
	for _, a := range ms.ancestors {
		all = append(all, a.methods...)
	}
	return all
}

// paramNames returns the Go names of m's parameters in a declaration
// whose type parameters are those of ctxNode.
func (fg *fileGen) paramNames(m *method, ctxNode *node) []string {
	taken := map[string]bool{}
	for _, p := range fg.g.typeParams(ctxNode) {
		taken[p] = true
	}
	if m.paramsType != nil {
		return []string{"in"}
	}
	out := make([]string, len(m.params))
	for i, sl := range m.params {
		out[i] = localName(sl.name, func(s string) bool { return taken[s] || fg.g.pkgTaken(s) })
		taken[out[i]] = true
	}
	return out
}

// paramList returns m's Go parameters after ctx: ", a T1, b T2" (names
// nil: types only).
func (fg *fileGen) paramList(m *method, names []string) string {
	var b strings.Builder
	if m.paramsType != nil {
		b.WriteString(", ")
		if names != nil {
			b.WriteString(names[0] + " ")
		}
		b.WriteString(fg.goType(m.paramsType))
		return b.String()
	}
	for i, sl := range m.params {
		b.WriteString(", ")
		if names != nil {
			b.WriteString(names[i] + " ")
		}
		b.WriteString(fg.goType(sl.t))
	}
	return b.String()
}

// resultType returns the Go type of m's result, "" if it has none.
func (fg *fileGen) resultType(m *method) string {
	switch {
	case m.stream:
		return ""
	case m.resultsType != nil:
		return fg.goType(m.resultsType)
	case m.several:
		return fg.nodeType(m.resultsNode, m.args)
	case len(m.results) == 1:
		return fg.goType(m.results[0].t)
	}
	return ""
}

// resultZero returns the zero value of m's result, "" if it has none.
func (fg *fileGen) resultZero(m *method) string {
	switch {
	case m.stream:
		return ""
	case m.resultsType != nil:
		return "nil"
	case m.several:
		return fg.nodeType(m.resultsNode, m.args) + "{}"
	case len(m.results) == 1:
		return fg.zero(m.results[0].t)
	}
	return ""
}

// signature returns m's Go signature after its name.
func (fg *fileGen) signature(m *method, names []string) string {
	ctx := "ctx context.Context"
	if names == nil {
		ctx = "context.Context"
	}
	s := "(" + ctx + fg.paramList(m, names) + ")"
	if rt := fg.resultType(m); rt != "" {
		return s + " (" + rt + ", error)"
	}
	return s + " error"
}

// errReturn returns the statement returning err from a method with m's
// results.
func (fg *fileGen) errReturn(m *method, err string) string {
	if z := fg.resultZero(m); z != "" {
		return "return " + z + ", " + err
	}
	return "return " + err
}

// pipelineType returns the Go type of m's pipelined results.
func (fg *fileGen) pipelineType(m *method) string {
	if len(m.caps) == 1 {
		return fg.goType(m.caps[0].t)
	}
	d := fg.decl(m.iface)
	return fg.qualName(m.iface, d.methods[m.index].pipeline.name) + fg.argList(m.args)
}

// argList returns "[A, B]" for generic arguments, or "".
func (fg *fileGen) argList(args []*typ) string {
	if len(args) == 0 {
		return ""
	}
	as := make([]string, len(args))
	for i, a := range args {
		as[i] = fg.goType(a)
	}
	return "[" + strings.Join(as, ", ") + "]"
}

// genInterface generates interface n: its Go interface, the Results and
// Pipeline structs of its methods, Unimplemented, the method descriptors
// and table, its mp.Interface, the proxy and the server functions.
func (fg *fileGen) genInterface(n *node) {
	g := fg.g
	fg.useContext()
	fg.useCapnp()
	d := fg.decl(n)
	ms, err := g.methodSet(n)
	if err != nil {
		fg.fail(err)
		return
	}
	generic := len(n.genericChain()) > 0
	tparams, targs := g.typeParamList(n), g.typeArgList(n)
	self := d.name + targs
	client := d.client.name + targs

	fg.p("// %s is the Go form of the Cap'n Proto interface %s (@%#x).\n", d.name, n.path(), n.id)
	if doc := docComment(n.doc, "", ""); doc != "" {
		fg.p("//\n%s", doc)
	}
	if d.rename != "" {
		fg.p("//\n// %s\n", d.rename)
	}
	fg.p("type %s%s interface {\n", d.name, tparams)
	for _, a := range ms.parents {
		fg.p("%s\n", fg.nodeType(a.node, a.args))
	}
	for _, m := range ms.own {
		if doc := docComment(n.memberDoc(m.index), m.name, m.goName); doc != "" {
			fg.p("%s", doc)
		}
		if m.rename != "" {
			fg.p("//\n// %s\n", m.rename)
		}
		fg.p("%s%s\n", m.goName, fg.signature(m, fg.paramNames(m, n)))
	}
	fg.p("}\n\n")

	for _, m := range ms.own {
		md := d.methods[m.index]
		if m.several {
			si := fg.structInfo(m.resultsNode, md.results.name)
			fg.p("// %s are the results of %s.%s.\n", md.results.name, n.path(), m.name)
			if md.results.rename != "" {
				fg.p("//\n// %s\n", md.results.rename)
			}
			fg.genStructBody(si)
		}
		if len(m.caps) > 1 {
			fg.p("// %s holds the capabilities among the results of %s.%s,\n// pipelined: calls on them are sent before the call returns.\n", md.pipeline.name, n.path(), m.name)
			if md.pipeline.rename != "" {
				fg.p("//\n// %s\n", md.pipeline.rename)
			}
			fg.p("type %s%s struct {\n", md.pipeline.name, tparams)
			for _, c := range m.caps {
				fg.p("%s %s\n", c.name, fg.goType(c.t))
			}
			fg.p("}\n\n")
		}
	}

	fg.genUnimplemented(n, d, ms, tparams, targs)

	if len(ms.own) > 0 {
		fg.p("var (\n")
	}
	for _, m := range ms.own {
		stream := ""
		if m.stream {
			stream = ", Stream: true"
		}
		fg.p("%s = mp.Method{InterfaceID: %#x, MethodID: %d, InterfaceName: %q, MethodName: %q,\nParamsSize: capnp.ObjectSize{DataSize: %d, PointerCount: %d}, ResultsSize: capnp.ObjectSize{DataSize: %d, PointerCount: %d}%s}\n",
			d.methods[m.index].desc, n.id, m.index, n.path(), m.name, m.paramsSize[0], m.paramsSize[1], m.resultsSize[0], m.resultsSize[1], stream)
	}
	if len(ms.own) > 0 {
		fg.p(")\n\n")
	}

	// The method tables: the interface's own, then each ancestor's.
	tables := []string{}
	for _, a := range ms.ancestors {
		ad := fg.decl(a.node)
		t := fg.qualName(a.node, ad.methodsVar.name)
		if len(a.node.genericChain()) > 0 {
			t += fg.argList(a.args) + "()"
		}
		tables = append(tables, t)
	}
	proxyOf := fmt.Sprintf("func(c *mp.Client) %s { return (*%s)(c) }", self, client)
	if !generic {
		fg.p("// %s are the methods %s declares itself (not those it inherits).\n", d.methodsVar.name, n.path())
		fg.renameNote(d.methodsVar)
		fg.p("var %s = []mp.ServerMethod{\n", d.methodsVar.name)
		for _, m := range ms.own {
			md := d.methods[m.index]
			fg.p("{Method: &%s, Serve: %s},\n", md.desc, md.serve)
		}
		fg.p("}\n\n")
		fg.p("// %s describes %s to the runtime.\n", d.ifaceVar.name, n.path())
		fg.renameNote(d.ifaceVar)
		fg.p("var %s = mp.NewInterface[%s](%#x, %q,\n%s)\n\n", d.ifaceVar.name, self, n.id, n.path(), proxyOf)
		fg.p("var _ = %s.AddMethods(%s)\n\n", d.ifaceVar.name, strings.Join(append([]string{d.methodsVar.name}, tables...), ", "))
	} else {
		fg.p("// %s returns the methods %s declares itself (not those it inherits).\n", d.methodsVar.name, n.path())
		fg.renameNote(d.methodsVar)
		fg.p("func %s%s() []mp.ServerMethod {\nreturn []mp.ServerMethod{\n", d.methodsVar.name, tparams)
		for _, m := range ms.own {
			md := d.methods[m.index]
			fg.p("{Method: &%s, Serve: %s%s},\n", md.desc, md.serve, targs)
		}
		fg.p("}\n}\n\n")
		fg.p("// %s describes %s to the runtime: one description per\n// instance, made on first use.\n", d.ifaceVar.name, n.path())
		fg.renameNote(d.ifaceVar)
		fg.p("func %s%s() *mp.Interface[%s] {\nif x := mp.InterfaceFor[%s](); x != nil {\nreturn x\n}\n", d.ifaceVar.name, tparams, self, self)
		fg.p("return mp.Instantiate(%#x, %q,\n%s,\n%s)\n}\n\n", n.id, n.path(), proxyOf, strings.Join(append([]string{d.methodsVar.name + targs + "()"}, tables...), ", "))
	}

	fg.genProxy(n, d, ms, tparams, targs)
	for _, m := range ms.own {
		fg.genServe(n, d, m, tparams, targs)
	}
}

func (fg *fileGen) renameNote(nm named) {
	if nm.rename != "" {
		fg.p("//\n// %s\n", nm.rename)
	}
}

// genUnimplemented generates UnimplementedX.
func (fg *fileGen) genUnimplemented(n *node, d *decl, ms *methodSet, tparams, targs string) {
	fg.p("// %s implements %s with methods that fail as not implemented:\n// embed it in an implementation to stay compatible when methods are\n// added to the interface.\n", d.unimpl.name, n.path())
	fg.renameNote(d.unimpl)
	fg.p("type %s%s struct{}\n\n", d.unimpl.name, tparams)
	for _, m := range allMethods(ms) {
		ret := fmt.Sprintf("mp.NotImplemented(%q)", m.iface.path()+"."+m.name)
		fg.p("func (%s%s) %s%s {\n%s\n}\n\n", d.unimpl.name, targs, m.goName, fg.signature(m, nil), fg.errReturn(m, ret))
	}
}

// genProxy generates the proxy type XClient and its methods.
func (fg *fileGen) genProxy(n *node, d *decl, ms *methodSet, tparams, targs string) {
	client := d.client.name + targs
	pn := fg.g.proxyNames(n, ms)
	fg.p("// %s is a proxy for %s %s served elsewhere: its methods call it.\n", d.client.name, article(n.path()), n.path())
	fg.renameNote(d.client)
	fg.p("type %s%s mp.Client\n\n", d.client.name, tparams)
	anyArgs := ""
	if tparams != "" {
		as := make([]string, len(fg.g.typeParams(n)))
		for i := range as {
			as[i] = "mp.AnyPointer"
		}
		anyArgs = "[" + strings.Join(as, ", ") + "]"
	}
	fg.p("var (\n_ %s%s = (*%s%s)(nil)\n_ %s%s = %s%s{}\n)\n\n", d.name, anyArgs, d.client.name, anyArgs, d.name, anyArgs, d.unimpl.name, anyArgs)
	fg.p("// MPClient returns the proxy's mp.Client.\nfunc (p *%s) MPClient() *mp.Client { return (*mp.Client)(p) }\n\n", client)
	fg.p("// %s releases the proxy's capability; calls made afterwards fail.\n", pn.close.name)
	fg.renameNote(pn.close)
	fg.p("func (p *%s) %s() error { return (*mp.Client)(p).Close() }\n\n", client, pn.close.name)
	for _, m := range ms.own {
		fg.genCall(n, d, m, client)
		if len(m.caps) > 0 {
			fg.genPipelined(n, d, m, client, pn.pipelined[methodKey{n.id, m.index}])
		}
	}
	// Inherited methods call the ancestor's proxy: every proxy type is an
	// mp.Client.
	for _, a := range ms.ancestors {
		ad := fg.decl(a.node)
		aClient := fg.qualName(a.node, ad.client.name) + fg.argList(a.args)
		ams, err := fg.g.methodSet(a.node)
		if err != nil {
			fg.fail(err)
			return
		}
		apn := fg.g.proxyNames(a.node, ams)
		for _, m := range a.methods {
			names := fg.paramNames(m, n)
			call := "ctx"
			for _, nm := range names {
				call += ", " + nm
			}
			fg.p("func (p *%s) %s%s {\nreturn (*%s)(p).%s(%s)\n}\n\n", client, m.goName, fg.signature(m, names), aClient, m.goName, call)
			if len(m.caps) > 0 {
				own := pn.pipelined[methodKey{m.iface.id, m.index}]
				theirs := apn.pipelined[methodKey{m.iface.id, m.index}]
				fg.p("func (p *%s) %s(ctx context.Context%s) %s {\nreturn (*%s)(p).%s(%s)\n}\n\n", client, own.name, fg.paramList(m, names), fg.pipelineType(m), aClient, theirs.name, call)
			}
		}
	}
}

// encodeParams returns the statements writing m's parameters (named
// names) into the call's parameters; onErr is the statement returning an
// error err.
func (fg *fileGen) encodeParams(m *method, names []string, onErr string) string {
	if m.paramsType != nil {
		return fmt.Sprintf("if in != nil {\nif err := in.EncodeCapnp(call.Encoder(), call.Params()); err != nil {\n%s\n}\n}\n", onErr)
	}
	var stmts strings.Builder
	usesParams, usesE := false, false
	for i, sl := range m.params {
		stmt, fallible := fg.encode(sl, "params", "e", names[i])
		if stmt == "" {
			continue
		}
		usesParams = true
		if fallible {
			usesE = true
			fmt.Fprintf(&stmts, "if err := %s; err != nil {\n%s\n}\n", stmt, onErr)
		} else {
			stmts.WriteString(stmt + "\n")
		}
	}
	switch {
	case usesE:
		return "params, e := call.Params(), call.Encoder()\n" + stmts.String()
	case usesParams:
		return "params := call.Params()\n" + stmts.String()
	}
	return ""
}

// genCall generates the proxy's method for m.
func (fg *fileGen) genCall(n *node, d *decl, m *method, client string) {
	names := fg.paramNames(m, n)
	desc := d.methods[m.index].desc
	fg.p("func (p *%s) %s%s {\n", client, m.goName, fg.signature(m, names))
	fg.p("call, err := (*mp.Client)(p).NewCall(ctx, &%s)\nif err != nil {\n%s\n}\n", desc, fg.errReturn(m, "err"))
	if m.stream {
		fg.p("%s", fg.encodeParams(m, names, "call.Finish()\nreturn err"))
		fg.p("return call.SendStream()\n}\n\n")
		return
	}
	fg.p("defer call.Finish()\n")
	fg.p("%s", fg.encodeParams(m, names, fg.errReturn(m, "err")))
	if fg.resultType(m) == "" {
		fg.p("_, err = call.Send()\nreturn err\n}\n\n")
		return
	}
	fg.p("res, err := call.Send()\nif err != nil {\n%s\n}\n", fg.errReturn(m, "err"))
	switch {
	case m.resultsType != nil:
		fg.p("r := new(%s)\nif err := r.DecodeCapnp(call.Decoder(), res); err != nil {\nreturn nil, err\n}\nreturn r, nil\n", fg.nodeType(m.resultsType.node, m.resultsType.args))
	case m.several:
		rt := fg.resultType(m)
		fg.p("var r %s\nif err := r.DecodeCapnp(call.Decoder(), res); err != nil {\nreturn %s{}, err\n}\nreturn r, nil\n", rt, rt)
	default:
		expr, fallible := fg.decode(m.results[0], "res", "call.Decoder()")
		if fallible {
			fg.p("return %s\n", expr)
		} else {
			fg.p("return %s, nil\n", expr)
		}
	}
	fg.p("}\n\n")
}

// genPipelined generates the proxy's pipelined variant of m, which
// returns the capabilities among its results without waiting for them.
func (fg *fileGen) genPipelined(n *node, d *decl, m *method, client string, name named) {
	names := fg.paramNames(m, n)
	desc := d.methods[m.index].desc
	rt := fg.pipelineType(m)
	broken := func(err string) string {
		one := func(c capResult) string {
			if c.t.kind == kCapability {
				return "mp.NewClient(capnp.ErrorClient(" + err + "))"
			}
			return fg.ifaceExpr(c.t) + ".Broken(" + err + ")"
		}
		if len(m.caps) == 1 {
			return one(m.caps[0])
		}
		var b strings.Builder
		b.WriteString(rt + "{")
		for i, c := range m.caps {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(c.name + ": " + one(c))
		}
		b.WriteString("}")
		return b.String()
	}
	field := func(c capResult) string {
		if c.t.kind == kCapability {
			return fmt.Sprintf("pl.Field(%d)", c.ptr)
		}
		return fmt.Sprintf("%s.FromClient(pl.Field(%d))", fg.ifaceExpr(c.t), c.ptr)
	}
	fg.p("// %s calls %s without waiting for its results: calls on the\n// capabilities it returns are sent at once and wait at the peer for it.\n", name.name, m.goName)
	fg.renameNote(name)
	fg.p("func (p *%s) %s(ctx context.Context%s) %s {\n", client, name.name, fg.paramList(m, names), rt)
	fg.p("call, err := (*mp.Client)(p).NewCall(ctx, &%s)\nif err != nil {\nreturn %s\n}\n", desc, broken("err"))
	fg.p("%s", fg.encodeParams(m, names, "call.Finish()\nreturn "+broken("err")))
	fg.p("pl := call.Pipeline()\ndefer pl.Done()\n")
	if len(m.caps) == 1 {
		fg.p("return %s\n}\n\n", field(m.caps[0]))
		return
	}
	fg.p("return %s{\n", rt)
	for _, c := range m.caps {
		fg.p("%s: %s,\n", c.name, field(c))
	}
	fg.p("}\n}\n\n")
}

// genServe generates the function serving m: it decodes the parameters,
// calls the implementation and encodes its results.
func (fg *fileGen) genServe(n *node, d *decl, m *method, tparams, targs string) {
	md := d.methods[m.index]
	names := fg.paramNames(m, n)
	fg.p("func %s%s(ctx context.Context, impl any, call *mp.ServerCall) error {\n", md.serve, tparams)
	if m.paramsType != nil {
		fg.p("in := new(%s)\nif err := in.DecodeCapnp(call.Decoder(), call.Params()); err != nil {\nreturn err\n}\n", fg.nodeType(m.paramsType.node, m.paramsType.args))
	} else {
		var stmts strings.Builder
		usesParams, usesD := false, false
		for i, sl := range m.params {
			expr, fallible := fg.decode(sl, "params", "d")
			if expr == "" {
				continue
			}
			usesParams = true
			if fallible {
				usesD = true
				fmt.Fprintf(&stmts, "%s, err := %s\nif err != nil {\nreturn err\n}\n", names[i], expr)
			} else {
				fmt.Fprintf(&stmts, "%s := %s\n", names[i], expr)
			}
		}
		switch {
		case usesD:
			fg.p("params, d := call.Params(), call.Decoder()\n")
		case usesParams:
			fg.p("params := call.Params()\n")
		}
		fg.p("%s", stmts.String())
	}
	args := "ctx"
	for _, nm := range names {
		args += ", " + nm
	}
	invoke := fmt.Sprintf("impl.(%s).%s(%s)", d.name+targs, m.goName, args)
	if fg.resultType(m) == "" {
		fg.p("return %s\n}\n\n", invoke)
		return
	}
	fg.p("r, err := %s\nif err != nil {\nreturn err\n}\n", invoke)
	if m.resultsType != nil {
		fg.p("if r == nil {\nreturn nil\n}\n")
	}
	fg.p("res, err := call.Results()\nif err != nil {\nreturn err\n}\n")
	switch {
	case m.resultsType != nil, m.several:
		fg.p("return r.EncodeCapnp(call.Encoder(), res)\n}\n\n")
	default:
		stmt, fallible := fg.encode(m.results[0], "res", "call.Encoder()", "r")
		if fallible {
			fg.p("return %s\n}\n\n", stmt)
		} else {
			fg.p("%s\nreturn nil\n}\n\n", stmt)
		}
	}
}

// article returns the indefinite article for a name.
func article(name string) string {
	if name != "" && strings.ContainsRune("AEIOUaeiou", rune(name[0])) {
		return "an"
	}
	return "a"
}
