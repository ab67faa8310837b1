package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/ipc"
)

// The test binary is the example itself: run as "plugins" (a link to it)
// it is the host, and spawned in a plugin's role it is the plugin, so
// that go test's cache covers the example's sources.
func TestMain(m *testing.M) {
	roles := make(map[string]func() int)
	for name := range plugins {
		roles[name] = func() int { return servePlugin(name) }
	}
	ipc.RunRole(roles)
	if filepath.Base(os.Args[0]) == "plugins" {
		os.Exit(host(os.Args[1:]))
	}
	os.Exit(m.Run())
}

const wantOutput = `crashy hello: hello!
reverse hello: olleh
upper hello: HELLO
crashy crash: failed: the plugin crashed
reverse crash: hsarc
upper crash: CRASH
crashy world: world!
reverse world: dlrow
upper world: WORLD
`

// The host spawns three plugin processes, each its own binary in a role,
// survives the crash of one (supervision restarts it, and it takes the
// next word), and stops them all when it is done.
func TestPluginsSurviveACrash(t *testing.T) {
	exe := linkSelf(t, "plugins")
	out, stderr := runExample(t, exe, "hello", "crash", "world")
	if out != wantOutput {
		t.Fatalf("output:\n%s\nwant:\n%s\nstderr:\n%s", out, wantOutput, stderr)
	}
	for _, want := range []string{`msg="child process exited unexpectedly" process=host child=crashy`, `status="exit status 3"`, `msg="restarting child process" process=host child=crashy`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// The example builds and runs as a program of its own module, outside
// this repository: its schema generated there by the pinned mpgen (go
// tool), its code vetted, its binary run.
func TestExampleInItsOwnModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module")
	}
	if _, err := exec.LookPath("capnp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the capnp compiler is missing (apt-get install capnproto)")
		}
		t.Skip("no capnp compiler")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const module = "example.com/plugins"
	copyFile(t, "main.go", filepath.Join(dir, "main.go"), "github.com/gomultiprocess/multiprocess/examples/plugins", module)
	copyFile(t, "pluginapi/plugin.capnp", filepath.Join(dir, "pluginapi", "plugin.capnp"), "", "")
	copyFile(t, "pluginapi/gen.go", filepath.Join(dir, "pluginapi", "gen.go"), "", "")
	copyFile(t, filepath.Join(root, "go.sum"), filepath.Join(dir, "go.sum"), "", "")
	// The framework's own requirements, which the new module inherits,
	// come from its go.mod (and its go.sum): the build needs no network.
	requires := frameworkRequires(t, filepath.Join(root, "go.mod"))
	gomod := "module " + module + "\n\ngo 1.26\n\nrequire github.com/gomultiprocess/multiprocess v0.0.0\n\n" + requires +
		"\nreplace github.com/gomultiprocess/multiprocess => " + root + "\n\ntool github.com/gomultiprocess/multiprocess/cmd/mpgen\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	for _, args := range [][]string{{"generate", "./..."}, {"vet", "./..."}, {"build", "-o", "plugins", "."}} {
		cmd := exec.Command(goCmd, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in a module of its own: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, stderr := runExample(t, filepath.Join(dir, "plugins"), "hello", "crash", "world")
	if out != wantOutput {
		t.Fatalf("output:\n%s\nwant:\n%s\nstderr:\n%s", out, wantOutput, stderr)
	}
}

// frameworkRequires returns the require blocks of the go.mod at path.
func frameworkRequires(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "require ("):
			in = true
		case in && line == ")":
			in = false
			out.WriteString(")\n")
			continue
		}
		if in {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

// linkSelf returns the test binary under name, in a directory of its own.
func linkSelf(t *testing.T, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.Link(self, path); err != nil {
		copyFile(t, self, path, "", "")
		if err := os.Chmod(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func runExample(t *testing.T, exe string, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", exe, err, out.String(), errOut.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish\nstdout:\n%s\nstderr:\n%s", exe, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// copyFile copies src to dst (making its directory), replacing the text
// old with repl if old is not empty.
func copyFile(t *testing.T, src, dst, old, repl string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if old != "" {
		b = bytes.ReplaceAll(b, []byte(old), []byte(repl))
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
