package types_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types"
)

// The C++ reference program is built once, by the first test that needs
// it, into a folder that TestMain removes.
var (
	cppOnce    sync.Once
	cppDir     string
	cppPath    string
	cppMissing error // a tool the build needs is not installed
	cppFailed  error // the build failed although the tools are there
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cppDir != "" {
		os.RemoveAll(cppDir)
	}
	os.Exit(code)
}

// requireCpp builds testdata/cpp/roundtrip.c++ (with the C++ code that
// capnp generates for types.capnp) and returns its path. It skips the test
// when the tool chain is missing, fails it instead under CI=true (CI
// installs the tools), and fails it when the build failed.
func requireCpp(t *testing.T) string {
	t.Helper()
	cppOnce.Do(func() {
		cppDir, cppFailed = os.MkdirTemp("", "mpgencpp")
		if cppFailed == nil {
			cppPath, cppMissing, cppFailed = buildCpp(cppDir)
		}
	})
	switch {
	case cppMissing != nil && os.Getenv("CI") == "true":
		t.Fatalf("the C++ reference cannot be built: %v (install libcapnp-dev, capnproto, g++ and pkg-config)", cppMissing)
	case cppMissing != nil:
		t.Skipf("the C++ reference cannot be built: %v (install libcapnp-dev, capnproto, g++ and pkg-config)", cppMissing)
	case cppFailed != nil:
		t.Fatalf("the C++ reference: %v", cppFailed)
	}
	return cppPath
}

func buildCpp(dir string) (path string, missing, failed error) {
	for _, tool := range []string{"capnp", "g++", "pkg-config", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", err, nil
		}
	}
	flags, err := run("pkg-config", "--cflags", "--libs", "capnp-rpc")
	if err != nil {
		return "", fmt.Errorf("pkg-config capnp-rpc: %w", err), nil
	}
	mod, err := run("go", "list", "-m", "-f", "{{.Dir}}", "capnproto.org/go/capnp/v3")
	if err != nil {
		return "", nil, err
	}
	std := filepath.Join(strings.TrimSpace(mod), "std")
	testdata, err := filepath.Abs("../../../testdata")
	if err != nil {
		return "", nil, err
	}
	gen := filepath.Join(dir, "gen")
	if err := os.Mkdir(gen, 0o700); err != nil {
		return "", nil, err
	}
	if _, err := run("capnp", "compile", "-oc++:"+gen, "--src-prefix="+testdata, "--src-prefix="+std, "-I", std,
		filepath.Join(testdata, "types.capnp"), filepath.Join(std, "go.capnp")); err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "roundtrip")
	args := []string{"-std=c++17", "-O0", "-I", gen, "-o", path, filepath.Join(testdata, "cpp/roundtrip.c++"),
		filepath.Join(gen, "types.capnp.c++"), filepath.Join(gen, "go.capnp.c++")}
	if _, err := run("g++", append(args, strings.Fields(flags)...)...); err != nil {
		return "", nil, err
	}
	return path, nil, nil
}

// run runs a build command and returns its standard output.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s: %w\n%s", name, err, stderr.String())
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
}

// cpp runs the reference in mode with stdin as its input and returns its
// output; a check that failed (exit status 1) fails the test.
func cpp(t *testing.T, mode string, stdin []byte) []byte {
	t.Helper()
	cmd := exec.Command(requireCpp(t), mode)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("roundtrip %s: %v\n%s%s", mode, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// stream returns v as the root of a message in stream framing.
func stream(t *testing.T, v *types.Root) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := capnp.NewEncoder(&buf).Encode(encode(t, v).Message()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readStream decodes the Root of the message in b.
func readStream(t *testing.T, b []byte) *types.Root {
	t.Helper()
	msg, err := capnp.NewDecoder(bytes.NewReader(b)).Decode()
	if err != nil {
		t.Fatal(err)
	}
	p, err := msg.Root()
	if err != nil {
		t.Fatal(err)
	}
	return decode[types.Root](t, p.Struct())
}

// newSRoot is a Root of the NewS values: what the C++ reference's fresh
// builders read as.
func newSRoot() *types.Root {
	return &types.Root{
		Scalars:  types.NewScalars(),
		Lists:    types.NewLists(),
		Shapes:   []types.Shape{*types.NewShape()},
		Generics: types.NewGenerics(),
		Anys:     types.NewAnys(),
		Defaults: types.NewDefaults(),
	}
}

// TestCppReadsOurs has the C++ reference check, field by field, what
// mpgen's code writes: the sample, the NewS values (which read as the
// schema's defaults), and Go's zero values.
func TestCppReadsOurs(t *testing.T) {
	cpp(t, "check-values", stream(t, sample(false)))
	cpp(t, "check-defaults", stream(t, newSRoot()))
	cpp(t, "check-zero", stream(t, &types.Root{Scalars: &types.Scalars{}, Lists: &types.Lists{}}))
}

// TestOursReadCpp decodes what the C++ reference builds: the sample, and
// fresh structs (which read as the NewS values).
func TestOursReadCpp(t *testing.T) {
	if d := diff(readStream(t, cpp(t, "write-values", nil)), sample(false)); d != "" {
		t.Errorf("the C++ sample: %s", d)
	}
	if d := diff(readStream(t, cpp(t, "write-defaults", nil)), newSRoot()); d != "" {
		t.Errorf("the C++ fresh structs: %s", d)
	}
}
