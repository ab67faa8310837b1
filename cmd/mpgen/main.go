package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mpgen:", err)
		os.Exit(1)
	}
}

// config is what one run of mpgen does.
type config struct {
	pkg      string            // -pkg; "" means the output folder's name
	includes []string          // -I
	mappings map[string]string // -M: schema file -> Go import path
	out      string            // -out; "" means next to the schemas (driver) or "." (plugin)
	files    []string          // schema files (driver mode); none means plugin mode
	dir      string            // the folder relative paths start from; "" means the current one
}

// parseArgs reads mpgen's command line.
func parseArgs(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{mappings: make(map[string]string)}
	fs := flag.NewFlagSet("mpgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mpgen [-pkg NAME] [-I DIR]... [-M FILE=IMPORTPATH]... [-out DIR] [file.capnp...]")
		fmt.Fprintln(stderr, "With files, mpgen runs capnp compile itself; without, it reads a CodeGeneratorRequest on stdin.")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.pkg, "pkg", "", "Go package `name` of the generated files (default: the output folder's base name)")
	fs.Func("I", "add `DIR` to capnp's import path (repeatable)", func(s string) error {
		cfg.includes = append(cfg.includes, s)
		return nil
	})
	fs.Func("M", "map an imported schema `FILE=IMPORTPATH` to its Go package (repeatable)", func(s string) error {
		file, path, ok := strings.Cut(s, "=")
		if !ok || file == "" || path == "" {
			return fmt.Errorf("want FILE=IMPORTPATH, got %q", s)
		}
		cfg.mappings[file] = path
		return nil
	})
	fs.StringVar(&cfg.out, "out", "", "write the generated files into `DIR`")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg.files = fs.Args()
	for _, f := range cfg.files {
		if !strings.HasSuffix(f, ".capnp") {
			return nil, fmt.Errorf("%s: not a .capnp file", f)
		}
	}
	return cfg, nil
}

func run(args []string, stdin io.Reader, stderr io.Writer) error {
	cfg, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	var req io.Reader = stdin
	if len(cfg.files) > 0 {
		b, err := compileRequest(cfg)
		if err != nil {
			return err
		}
		req = bytes.NewReader(b)
	}
	files, err := generate(cfg, req)
	if err != nil {
		return err
	}
	return writeFiles(files)
}

// writeFiles writes the generated files, each only if it changed (so that
// go generate keeps modification times of files it did not change).
func writeFiles(files []outFile) error {
	for _, f := range files {
		if old, err := os.ReadFile(f.path); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// compileRequest runs `capnp compile -o-` on cfg's files and returns the
// CodeGeneratorRequest it writes.
func compileRequest(cfg *config) ([]byte, error) {
	args := []string{"compile", "-o-"}
	if std := goCapnpStd(cfg.dir); std != "" {
		args = append(args, "-I", std)
	}
	for _, dir := range cfg.includes {
		args = append(args, "-I", dir)
	}
	args = append(args, cfg.files...)
	cmd := exec.Command("capnp", args...)
	cmd.Dir = cfg.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("capnp compile: %w\n%s", err, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("capnp compile (is the capnp compiler installed?): %w", err)
	}
	return stdout.Bytes(), nil
}

// goCapnpStd returns go-capnp's std folder, which holds /go.capnp and
// /capnp/*.capnp, as the go command finds it from dir; "" if it cannot
// (capnp's own standard import path still has /capnp/c++.capnp).
func goCapnpStd(dir string) string {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "capnproto.org/go/capnp/v3")
	cmd.Dir = dir
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" {
		return ""
	}
	std := filepath.Join(mod, "std")
	if _, err := os.Stat(filepath.Join(std, "go.capnp")); err != nil {
		return ""
	}
	return std
}
