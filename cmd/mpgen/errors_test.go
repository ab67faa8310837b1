package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSchemas writes files (name -> text) into a new folder and returns
// it.
func writeSchemas(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// generateArgs runs mpgen with args in dir and returns its files or
// error.
func generateArgs(t *testing.T, dir string, args ...string) ([]outFile, error) {
	t.Helper()
	cfg, err := parseArgs(args, io.Discard)
	if err != nil {
		return nil, err
	}
	cfg.dir = dir
	req, err := compileRequest(cfg)
	if err != nil {
		return nil, err
	}
	return generate(cfg, bytes.NewReader(req))
}

// TestErrors checks that what mpgen cannot generate fails with an error
// that names the schema file and the node, and says what to do.
func TestErrors(t *testing.T) {
	requireCapnp(t)
	tests := []struct {
		name  string
		files map[string]string
		args  []string
		want  []string // substrings of the error
	}{
		{
			name: "an imported file's types without -M",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\nstruct A { x @0 :UInt8; }\n",
				"b.capnp": "@0xe0b5a1a6b4c0f5d3;\nusing A = import \"a.capnp\";\nstruct B { a @0 :A.A; }\n",
			},
			args: []string{"b.capnp"},
			want: []string{"b.capnp: B:", "a.capnp", `-M a.capnp=IMPORTPATH`},
		},
		{
			name: "-M for a file that is not imported",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\nstruct A { x @0 :UInt8; }\n",
			},
			args: []string{"-M", "nope.capnp=example.com/nope", "a.capnp"},
			want: []string{"-M nope.capnp"},
		},
		{
			name: "two files of one package declare the same name",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\nstruct Foo { x @0 :UInt8; }\n",
				"b.capnp": "@0xe0b5a1a6b4c0f5d3;\nconst foo :UInt8 = 1;\n",
			},
			args: []string{"a.capnp", "b.capnp"},
			want: []string{"b.capnp", "the const foo", "Foo", "a.capnp"},
		},
		{
			name: "a method inherited from two interfaces",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\ninterface P1 { go @0 (); }\ninterface P2 { go @0 (x :UInt8); }\ninterface C extends(P1, P2) {}\n",
			},
			args: []string{"a.capnp"},
			want: []string{"a.capnp", "C:", "unsupported", "Go", "P1", "P2"},
		},
		{
			name: "an interface extended twice with different arguments",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\ninterface S(T) { get @0 () -> (v :T); }\n" +
					"interface A extends(S(Text)) {}\ninterface C extends(A, S(Data)) {}\n",
			},
			args: []string{"a.capnp"},
			want: []string{"a.capnp", "C:", "unsupported", "extends S twice"},
		},
		{
			name: "files in two folders without -out",
			files: map[string]string{
				"a.capnp":     "@0xd2ec7c55e3b9d8a1;\nstruct A { x @0 :UInt8; }\n",
				"sub/b.capnp": "@0xe0b5a1a6b4c0f5d3;\nstruct B { x @0 :UInt8; }\n",
			},
			args: []string{"a.capnp", "sub/b.capnp"},
			want: []string{"different folders", "-out"},
		},
		{
			name: "a schema that does not compile",
			files: map[string]string{
				"a.capnp": "@0xd2ec7c55e3b9d8a1;\nstruct A { x @0 :Nope; }\n",
			},
			args: []string{"a.capnp"},
			want: []string{"capnp compile", "a.capnp:2"},
		},
		{
			name:  "-M without a path",
			args:  []string{"-M", "a.capnp", "a.capnp"},
			want:  []string{"FILE=IMPORTPATH"},
			files: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeSchemas(t, tt.files)
			_, err := generateArgs(t, dir, tt.args...)
			if err == nil {
				t.Fatalf("no error; want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestAnnotationImportsNeedNoMapping: a file that only provides
// annotations (capnp's c++.capnp, libmultiprocess's proxy.capnp) needs no
// -M; mpgen ignores annotations.
func TestAnnotationImportsNeedNoMapping(t *testing.T) {
	requireCapnp(t)
	dir := writeSchemas(t, map[string]string{
		"ann.capnp": "@0xd2ec7c55e3b9d8a1;\nannotation wrap(interface, struct): Text;\n",
		"a.capnp": "@0xe0b5a1a6b4c0f5d3;\nusing Cxx = import \"/capnp/c++.capnp\";\n$Cxx.namespace(\"x\");\n" +
			"using Ann = import \"ann.capnp\";\nstruct A $Ann.wrap(\"A\") { x @0 :UInt8; }\n",
	})
	files, err := generateArgs(t, dir, "a.capnp")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || filepath.Base(files[0].path) != "a.capnp.mp.go" || !bytes.Contains(files[0].data, []byte("type A struct")) {
		t.Fatalf("generated %v", files)
	}
	if !bytes.Contains(files[0].data, []byte("package "+packageName(filepath.Base(dir)))) {
		t.Errorf("the package is not named after the folder:\n%s", files[0].data[:200])
	}
}

// TestPluginMode feeds mpgen a CodeGeneratorRequest on stdin, as capnp
// compile -o does (or a pipe from capnp compile -o-).
func TestPluginMode(t *testing.T) {
	requireCapnp(t)
	dir := writeSchemas(t, map[string]string{
		"a.capnp": "@0xd2ec7c55e3b9d8a1;\nstruct A { x @0 :UInt8 = 7; }\n",
	})
	cfg := &config{files: []string{"a.capnp"}, dir: dir}
	req, err := compileRequest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "pkg-name")
	if err := run([]string{"-out", out}, bytes.NewReader(req), io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "a.capnp.mp.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"package pkgname\n", "// Code generated by mpgen (mp.GeneratorVersion 1) from a.capnp. DO NOT EDIT.", "v.X = s.Uint8(0) ^ 7"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the generated file lacks %q", want)
		}
	}
	if err := run([]string{"-pkg", "other", "-out", out}, bytes.NewReader(req), io.Discard); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "a.capnp.mp.go")); !bytes.Contains(b, []byte("package other\n")) {
		t.Error("-pkg is not the package name")
	}
	if err := run(nil, strings.NewReader("not a message"), io.Discard); err == nil {
		t.Error("garbage on stdin: no error")
	}
}
