package main

import (
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"capnproto.org/go/capnp/v3/std/capnp/schema"

	"github.com/gomultiprocess/multiprocess/mp"
)

// An outFile is a generated file.
type outFile struct {
	path string
	data []byte
}

// gen generates one Go package from the requested files of one request.
type gen struct {
	cfg *config
	rq  *request
	pkg string

	// pkgScope holds every package-level name of the generated package
	// (the declarations of every requested file, codec and default
	// variables) and the names of imported packages.
	pkgScope *scope
	aliases  map[*file]string  // the Go package name of each imported schema file
	codecs   map[string]string // codec variables, by the Go type they code
	defaults map[string]string // default variables, by owner
	tparams  map[*node][]string
	msets    map[*node]*methodSet
}

// generate reads a CodeGeneratorRequest from r and returns the Go files
// for its requested files.
func generate(cfg *config, r io.Reader) ([]outFile, error) {
	rq, err := readRequest(r)
	if err != nil {
		return nil, err
	}
	if len(rq.requested) == 0 {
		return nil, errors.New("the request names no file to generate")
	}
	g := &gen{
		cfg: cfg, rq: rq,
		pkgScope: newScope(),
		aliases:  make(map[*file]string),
		codecs:   make(map[string]string),
		defaults: make(map[string]string),
		tparams:  make(map[*node][]string),
		msets:    make(map[*node]*methodSet),
	}
	outDir, err := g.outputPaths()
	if err != nil {
		return nil, err
	}
	g.pkg = cfg.pkg
	if g.pkg == "" {
		abs, err := filepath.Abs(filepath.Join(cfg.dir, outDir))
		if err != nil {
			return nil, err
		}
		g.pkg = packageName(filepath.Base(abs))
	}
	if err := g.packageNames(); err != nil {
		return nil, err
	}
	if err := g.importMappings(); err != nil {
		return nil, err
	}
	var out []outFile
	for _, f := range rq.requested {
		data, err := g.genFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, outFile{path: f.outPath, data: data})
	}
	return out, nil
}

// outputPaths sets the output path of each requested file and returns
// the folder they are in: one Go package.
func (g *gen) outputPaths() (string, error) {
	dir := g.cfg.out
	if dir == "" && len(g.cfg.files) == 0 {
		dir = "." // plugin mode: capnp runs plugins in the output folder
	}
	seen := map[string]*file{}
	outDir := ""
	for _, f := range g.rq.requested {
		d := dir
		if d == "" {
			d = filepath.Dir(f.name)
		}
		p := filepath.Join(d, f.base()+".mp.go")
		if prev := seen[p]; prev != nil {
			return "", fmt.Errorf("%s and %s would both be generated into %s", prev.name, f.name, p)
		}
		seen[p] = f
		if outDir == "" {
			outDir = d
		} else if filepath.Clean(outDir) != filepath.Clean(d) {
			return "", fmt.Errorf("%s and %s are in different folders: the files of one run form one Go package (use -out)", g.rq.requested[0].name, f.name)
		}
		if g.cfg.dir != "" && !filepath.IsAbs(p) {
			p = filepath.Join(g.cfg.dir, p)
		}
		f.outPath = p
	}
	return outDir, nil
}

// packageNames names the declarations of every requested file, and
// fails if two files of the package declare the same name.
func (g *gen) packageNames() error {
	owner := map[string]*file{}
	for _, f := range g.rq.requested {
		nm, err := g.fileNames(f)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(nm.scope.takenBy))
		for name := range nm.scope.takenBy {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			what := nm.scope.takenBy[name]
			if prev := owner[name]; prev != nil {
				return fmt.Errorf("%s: %s would be named %s, as %s is in %s: generate the two files into different packages", f.name, what, name, g.pkgScope.takenBy[name], prev.name)
			}
			owner[name] = f
			g.pkgScope.reserve(name, what)
		}
	}
	return nil
}

// importMappings applies the -M flags to the files they name and names
// the Go packages of mapped files.
func (g *gen) importMappings() error {
	files := append([]*file(nil), g.rq.files...)
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	used := map[string]bool{}
	for _, f := range files {
		if f.requested {
			continue
		}
		keys := append([]string{f.name, "/" + f.name}, f.imports...)
		for _, k := range keys {
			if path, ok := g.cfg.mappings[k]; ok {
				f.goImport = path
				used[k] = true
			}
		}
	}
	var unused []string
	for k := range g.cfg.mappings {
		if !used[k] {
			unused = append(unused, k)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		return fmt.Errorf("-M %s: no schema file of that name is imported (or it is generated in this run)", strings.Join(unused, ", "))
	}
	for _, f := range files {
		if f.goImport == "" {
			continue
		}
		base := f.goImport
		if i := strings.LastIndexByte(base, '/'); i >= 0 {
			base = base[i+1:]
		}
		want := packageName(base)
		if fixedImports[want] != "" || locals[want] {
			// Generated code would hide it.
			want += "_"
		}
		name, _ := g.pkgScope.claim(want, "the package of "+f.name)
		g.aliases[f] = name
	}
	return nil
}

// claimPkg takes a package-level name for a generated variable.
func (g *gen) claimPkg(want, what string) string {
	name, _ := g.pkgScope.claim(want, what)
	return name
}

// pkgTaken reports whether name is a package-level name or an import.
func (g *gen) pkgTaken(name string) bool { return g.pkgScope.taken(name) }

// fileGen generates one file.
type fileGen struct {
	g       *gen
	f       *file
	body    bytes.Buffer
	vars    []string          // codec and default variables, declared at the end
	imports map[string]string // imported schema packages: name -> path
	uses    map[string]bool   // fixed imports used: context, math...
	// instances are the instances of generic interfaces that the file
	// mentions: its init function makes their descriptions, which
	// mp.CodecFor needs.
	instances map[string]bool
	where     string // the node being generated, for errors
	err       error
}

func (fg *fileGen) fail(err error) {
	if fg.err == nil {
		where := fg.f.name
		if fg.where != "" {
			where += ": " + fg.where
		}
		fg.err = fmt.Errorf("%s: %w", where, err)
	}
}

func (fg *fileGen) useMath()    { fg.uses["math"] = true }
func (fg *fileGen) useContext() { fg.uses["context"] = true }
func (fg *fileGen) useCapnp()   { fg.uses["capnp"] = true }
func (fg *fileGen) useStrconv() { fg.uses["strconv"] = true }

// importFile returns the package name under which fg's file refers to
// f's Go package, importing it.
func (fg *fileGen) importFile(f *file) string {
	alias, ok := fg.g.aliases[f]
	if !ok {
		imported := ""
		if len(f.imports) > 0 {
			imported = fmt.Sprintf(" (imported as %q)", f.imports[0])
		}
		key := f.name
		if len(f.imports) > 0 {
			key = f.imports[0]
		}
		fg.fail(fmt.Errorf("types of %s%s are used, but it is not generated in this run: add -M %s=IMPORTPATH", f.name, imported, key))
		return "invalid"
	}
	fg.imports[alias] = f.goImport
	return alias
}

// p writes formatted code.
func (fg *fileGen) p(format string, args ...any) {
	fmt.Fprintf(&fg.body, format, args...)
}

// genFile generates the Go file of f.
func (g *gen) genFile(f *file) ([]byte, error) {
	fg := &fileGen{g: g, f: f, imports: make(map[string]string), uses: map[string]bool{"mp": true}, instances: map[string]bool{}}
	for _, c := range g.rq.children(f.node) {
		fg.genNode(c)
	}
	if fg.err != nil {
		return nil, fg.err
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "// Code generated by mpgen (mp.GeneratorVersion %d) from %s. DO NOT EDIT.\n\n", generatorVersion, f.base())
	fmt.Fprintf(&out, "package %s\n\n", g.pkg)
	out.WriteString("import (\n")
	for _, std := range []string{"context", "math", "strconv"} {
		if fg.uses[std] {
			fmt.Fprintf(&out, "%q\n", std)
		}
	}
	if fg.uses["capnp"] {
		fmt.Fprintf(&out, "\ncapnp %q\n", fixedImports["capnp"])
	}
	fmt.Fprintf(&out, "\nmp %q\n", fixedImports["mp"])
	aliases := make([]string, 0, len(fg.imports))
	for a := range fg.imports {
		aliases = append(aliases, a)
	}
	sort.Slice(aliases, func(i, j int) bool { return fg.imports[aliases[i]] < fg.imports[aliases[j]] })
	for _, a := range aliases {
		fmt.Fprintf(&out, "%s %q\n", a, fg.imports[a])
	}
	out.WriteString(")\n\n")
	out.WriteString("const _ = mp.SupportPackageIsVersion1\n\n")
	out.Write(fg.body.Bytes())
	for _, v := range fg.vars {
		out.WriteString(v)
	}
	if len(fg.instances) > 0 {
		insts := make([]string, 0, len(fg.instances))
		for x := range fg.instances {
			insts = append(insts, x)
		}
		sort.Strings(insts)
		out.WriteString("\n// The instances of generic interfaces used here, described before any\n// value is decoded (mp.CodecFor finds them).\nfunc init() {\n")
		for _, x := range insts {
			out.WriteString(x + "\n")
		}
		out.WriteString("}\n")
	}
	src, err := format.Source(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: generated code does not parse (a bug in mpgen): %w\n%s", f.name, err, numbered(out.Bytes()))
	}
	return src, nil
}

// generatorVersion is the version of generated code that this mpgen
// writes.
const generatorVersion = mp.GeneratorVersion

func numbered(src []byte) string {
	var b strings.Builder
	for i, l := range strings.Split(string(src), "\n") {
		b.WriteString(strconv.Itoa(i+1) + "\t" + l + "\n")
	}
	return b.String()
}

// genNode generates the declarations of n and of the nodes declared in
// it.
func (fg *fileGen) genNode(n *node) {
	fg.where = n.path()
	switch n.Which() {
	case schema.Node_Which_structNode:
		fg.genStruct(n)
	case schema.Node_Which_enum:
		fg.genEnum(n)
	case schema.Node_Which_interface:
		fg.genInterface(n)
	case schema.Node_Which_const:
		fg.genConst(n)
	case schema.Node_Which_annotation:
		return
	}
	for _, c := range fg.g.rq.children(n) {
		fg.genNode(c)
	}
}
