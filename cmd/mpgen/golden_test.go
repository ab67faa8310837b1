package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated files of the golden packages")

// requireCapnp skips the test when the capnp compiler is missing, and
// fails it instead under CI=true (CI installs it).
func requireCapnp(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("capnp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("capnp compiler not found: %v (install capnproto)", err)
		}
		t.Skipf("capnp compiler not found: %v (install capnproto)", err)
	}
}

// goldenDirs are the packages whose code mpgen generates: their gen.go
// says how.
func goldenDirs(t *testing.T) []string {
	t.Helper()
	gens, err := filepath.Glob("internal/golden/*/gen.go")
	if err != nil {
		t.Fatal(err)
	}
	gens = append(gens, "../../internal/mptestschema/gen.go")
	var dirs []string
	for _, g := range gens {
		dirs = append(dirs, filepath.Dir(g))
	}
	return dirs
}

// mpgenArgs returns the arguments of the `//go:generate go tool mpgen`
// line of gen.go in dir.
func mpgenArgs(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	const prefix = "//go:generate go tool mpgen "
	for s.Scan() {
		if l := s.Text(); strings.HasPrefix(l, prefix) {
			return strings.Fields(l[len(prefix):])
		}
	}
	t.Fatalf("%s/gen.go has no %q line", dir, prefix)
	return nil
}

// generateIn runs mpgen as gen.go in dir does, and returns the files it
// generates.
func generateIn(t *testing.T, dir string, args []string) []outFile {
	t.Helper()
	cfg, err := parseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.dir = dir
	req, err := compileRequest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	files, err := generate(cfg, bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestGolden regenerates the code of every golden package (and of mp's
// test schema) and compares it with the files committed; -update rewrites
// them.
func TestGolden(t *testing.T) {
	requireCapnp(t)
	for _, dir := range goldenDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			files := generateIn(t, dir, mpgenArgs(t, dir))
			made := map[string]bool{}
			for _, f := range files {
				made[filepath.Clean(f.path)] = true
				if *update {
					if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				old, err := os.ReadFile(f.path)
				if err != nil {
					t.Errorf("%s: %v (go test -update writes it)", f.path, err)
					continue
				}
				if !bytes.Equal(old, f.data) {
					t.Errorf("%s differs from what mpgen generates now (go test ./cmd/mpgen -update rewrites it):\n%s", f.path, firstDiff(old, f.data))
				}
			}
			stale, _ := filepath.Glob(filepath.Join(dir, "*.mp.go"))
			for _, s := range stale {
				if !made[filepath.Clean(s)] {
					t.Errorf("%s is not generated any more: remove it", s)
				}
			}
		})
	}
}

// firstDiff describes the first line where a and b differ.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n  committed: " + x + "\n  generated: " + y
		}
	}
	return "(no line differs)"
}

// TestGoldenVet runs go vet on the generated packages (they compile, as
// the tests that import them show).
func TestGoldenVet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go vet")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found")
	}
	cmd := exec.Command("go", "vet", "./internal/golden/...", "../../internal/mptestschema")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go vet: %v\n%s", err, out)
	}
}
