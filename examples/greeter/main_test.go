package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary is the example itself: run as "greeter" (a link to it)
// it is the program, parent and child, so that go test's cache covers
// the example's sources.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "greeter" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The program greets through a child process of its own, and the child's
// declared error reaches the parent as itself.
func TestGreeter(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "greeter")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Link(self, exe); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(exe)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("greeter did not finish; stderr:\n%s", stderr.String())
	}
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("greeter: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	m := regexp.MustCompile(`^hello, world, from process (\d+)\nthe child refused: no name given\n$`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("output:\n%s", stdout.String())
	}
	if pid, _ := strconv.Atoi(m[1]); pid == cmd.Process.Pid || pid == os.Getpid() {
		t.Errorf("the greeting came from process %d, the program's own (%d)", pid, cmd.Process.Pid)
	}
}

// README.md's quick start is this example, file for file.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ path, lang string }{
		{"greeterapi/greeter.capnp", "capnp"},
		{"greeterapi/api.go", "go"},
		{"main.go", "go"},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if block := "```" + f.lang + "\n" + string(b) + "```\n"; !strings.Contains(string(readme), block) {
			t.Errorf("README.md does not show examples/greeter/%s as it is", f.path)
		}
	}
}
