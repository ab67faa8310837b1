package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The packages whose benchmarks the report runs.
const (
	benchPkg = "github.com/gomultiprocess/multiprocess/bench"
	floorPkg = "github.com/gomultiprocess/multiprocess/bench/floor"
	peersPkg = "github.com/gomultiprocess/multiprocess/bench/peers"
)

// peersModule is the peers' module directory, from this module's root: a
// module of its own, whose dependencies (gRPC, protobuf) come from the Go
// module proxy when it is built.
const peersModule = "bench/peers"

// A pass is one invocation of a test binary within a round: the package,
// the benchmarks it selects and how long each runs.
type pass struct {
	name      string
	pkg       string
	bench     string // -test.bench
	benchtime string // -test.benchtime
	// module is the directory of the package's module, relative to this
	// module's root, when it is another module; such a package is
	// optional: if it cannot be built, its passes are left out and the
	// report says why.
	module string
}

func main() {
	count := flag.Int("count", 7, "rounds of the whole suite; figures are medians over them")
	benchtime := flag.String("benchtime", "1s", "-benchtime of the timed benchmarks")
	floortime := flag.String("floortime", "300ms", "-benchtime of bench/floor's benchmarks (in-process, one pass per round)")
	streamN := flag.Int("stream", issueStreamCount, "messages per streaming run")
	bigN := flag.Int("bigcalls", issueBigCalls, "1 MiB calls per run")
	rawOut := flag.String("o", "", "also write the raw go test output of every round to this file (and its stderr to FILE.stderr)")
	from := flag.String("from", "", "make the report from this file of saved go test output instead of running the suite")
	noPeers := flag.Bool("nopeers", false, "leave out the peers module (bench/peers: gRPC, go-capnp's rpc)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench/report [flags]\n\n"+
			"Runs package bench's benchmarks and those of the peers module (bench/peers)\n"+
			"-count times, interleaved, and prints a markdown table of medians, ratios to\n"+
			"the raw baseline and to each peer, and the targets, with bench/floor's figures\n"+
			"beside them.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 || *count < 1 || *streamN < 1 || *bigN < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if *from != "" {
		err = fromFile(os.Stdout, *from)
	} else {
		timed := "^(BenchmarkEcho|BenchmarkConcurrent16|BenchmarkPipelined|BenchmarkSpawn)$"
		big, stream := fmt.Sprintf("%dx", *bigN), fmt.Sprintf("%dx", *streamN)
		// Each of package bench's passes is followed by the peers' same
		// pass, so that they alternate in time as the baselines and ours do.
		passes := []pass{
			{name: "timed", pkg: benchPkg, bench: timed, benchtime: *benchtime},
			{name: "peers, timed", pkg: peersPkg, bench: timed, benchtime: *benchtime, module: peersModule},
			{name: "1 MiB calls", pkg: benchPkg, bench: "^BenchmarkEcho1MiB$", benchtime: big},
			{name: "peers, 1 MiB calls", pkg: peersPkg, bench: "^BenchmarkEcho1MiB$", benchtime: big, module: peersModule},
			{name: "streaming", pkg: benchPkg, bench: "^BenchmarkStream64B$", benchtime: stream},
			{name: "peers, streaming", pkg: peersPkg, bench: "^BenchmarkStream64B$", benchtime: stream, module: peersModule},
			{name: "floor", pkg: floorPkg, bench: ".", benchtime: *floortime},
		}
		if *noPeers {
			passes = slices.DeleteFunc(passes, func(p pass) bool { return p.module != "" })
		}
		err = runSuite(ctx, os.Stdout, *count, passes, *rawOut)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// fromFile renders the report of saved output: rounds are told apart by
// the first benchmark of a round appearing again.
func fromFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	results, failed, err := parse(f)
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("the saved output reports failures: %s", strings.Join(failed, ", "))
	}
	var runs []run
	for _, res := range results {
		if len(runs) == 0 || hasResult(runs[len(runs)-1], res.name) {
			runs = append(runs, run{})
		}
		runs[len(runs)-1][res.name] = res
	}
	fmt.Fprintf(w, "Figures from %s: medians of %d runs; a ratio is the median of the per-run ratios, lowest and highest in brackets.\n\n", path, len(runs))
	figures{runs: runs, peersMissing: "the saved output has none of their results"}.render(w)
	return nil
}

func hasResult(r run, name string) bool {
	_, ok := r[name]
	return ok
}

// A testBinary is a package's test binary and the directory it runs in.
type testBinary struct{ bin, dir string }

// runSuite builds each package's test binary once, runs every pass count
// times, round after round (so that the baselines and ours alternate in
// time), and writes the report.
func runSuite(ctx context.Context, w io.Writer, count int, passes []pass, rawOut string) error {
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := goOutput(ctx, "", "list", "-m", "-f", "{{.Dir}}")
	if err != nil {
		return fmt.Errorf("find the module (run this inside it): %w", err)
	}
	bins := make(map[string]testBinary)
	unbuilt := make(map[string]bool) // optional packages that failed to build
	peersMissing := "left out (-nopeers)"
	for _, p := range passes {
		if _, ok := bins[p.pkg]; ok || unbuilt[p.pkg] {
			continue
		}
		bin := filepath.Join(tmp, fmt.Sprintf("%d.test", len(bins)))
		progress("building %s", p.pkg)
		tb, err := build(ctx, root, p, bin)
		if err != nil && p.module != "" {
			// Most likely its modules could not be downloaded.
			peersMissing = "bench/peers could not be built: " + firstLine(err.Error())
			progress("%s; carrying on without it", peersMissing)
			unbuilt[p.pkg] = true
			continue
		}
		if err != nil {
			return fmt.Errorf("build the benchmarks: %w", err)
		}
		if p.module != "" {
			peersMissing = ""
		}
		bins[p.pkg] = tb
	}
	passes = slices.DeleteFunc(slices.Clone(passes), func(p pass) bool { _, ok := bins[p.pkg]; return !ok })
	dir := bins[benchPkg].dir

	// The raw output keeps stdout and stderr apart: a log line on stderr
	// may come between a benchmark's name and its figures.
	rawStdout, rawStderr := io.Discard, io.Discard
	if rawOut != "" {
		for _, x := range []struct {
			w    *io.Writer
			path string
		}{{&rawStdout, rawOut}, {&rawStderr, rawOut + ".stderr"}} {
			f, err := os.Create(x.path)
			if err != nil {
				return err
			}
			defer f.Close()
			*x.w = f
		}
	}
	info := machineInfo(ctx, dir)
	started := time.Now()
	loads := []float64{loadAverage()}
	var runs []run
	for i := range count {
		r := run{}
		for _, p := range passes {
			progress("round %d/%d: %s (load %.2f)", i+1, count, p.name, loadAverage())
			out, err := runPass(ctx, bins[p.pkg], p, rawStdout, rawStderr)
			if err != nil {
				return err
			}
			for _, res := range out {
				r[res.name] = res
			}
			loads = append(loads, loadAverage())
		}
		runs = append(runs, r)
	}

	fmt.Fprintf(w, "Taken %s on %s. Medians of %d interleaved runs of the suite (each run: %s); "+
		"a ratio is the median of the per-run ratios, lowest and highest in brackets. "+
		"Load average (1 min) %.2f–%.2f during the run, which took %s.\n\n",
		started.Format("2006-01-02"), info, count, describePasses(passes),
		slices.Min(loads), slices.Max(loads), time.Since(started).Round(time.Second))
	figures{runs: runs, peersMissing: peersMissing}.render(w)
	return nil
}

// build builds the test binary of p's package into bin; a package of
// another module is built in that module's directory, below root.
func build(ctx context.Context, root string, p pass, bin string) (testBinary, error) {
	modDir := root
	if p.module != "" {
		modDir = filepath.Join(root, filepath.FromSlash(p.module))
	}
	dir, err := goOutput(ctx, modDir, "list", "-f", "{{.Dir}}", p.pkg)
	if err != nil {
		return testBinary{}, fmt.Errorf("find package %s: %w", p.pkg, err)
	}
	if _, err := goOutput(ctx, modDir, "test", "-c", "-o", bin, p.pkg); err != nil {
		return testBinary{}, err
	}
	return testBinary{bin, dir}, nil
}

// firstLine returns the first line of s that says something: the go
// command's own error, rather than the line that says which command
// failed with which exit status, its progress, or the package a build
// error is in.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.Contains(l, ": exit status ") && !strings.HasPrefix(l, "# ") &&
			!strings.HasPrefix(l, "go: downloading ") && !strings.HasPrefix(l, "go: finding ") {
			return l
		}
	}
	return strings.TrimSpace(s)
}

func describePasses(passes []pass) string {
	var parts []string
	for _, p := range passes {
		parts = append(parts, fmt.Sprintf("%s at -benchtime %s", p.name, p.benchtime))
	}
	return strings.Join(parts, ", ")
}

// runPass runs the test binary once and returns its results. A failure
// is an error that carries the end of the output.
func runPass(ctx context.Context, tb testBinary, p pass, rawStdout, rawStderr io.Writer) ([]result, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tb.bin,
		"-test.run=^$", "-test.bench="+p.bench, "-test.benchtime="+p.benchtime,
		"-test.benchmem", "-test.count=1")
	cmd.Dir = tb.dir // as go test runs it
	cmd.Stdout = io.MultiWriter(&stdout, rawStdout)
	cmd.Stderr = io.MultiWriter(&stderr, rawStderr)
	runErr := cmd.Run()
	results, failed, err := parse(bytes.NewReader(stdout.Bytes()))
	if err == nil && runErr == nil && len(failed) > 0 {
		err = errors.New("failed: " + strings.Join(failed, ", "))
	}
	if runErr != nil || err != nil {
		return nil, fmt.Errorf("pass %q: %w\n%s%s", p.name, errors.Join(runErr, err), tail(stdout.String(), 40), tail(stderr.String(), 20))
	}
	if n := strings.Count(stderr.String(), "\n"); n > 0 {
		progress("  %d lines on stderr (-o keeps them)", n)
	}
	return results, nil
}

func tail(s string, lines int) string {
	ls := strings.SplitAfter(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "")
}

func goOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "report: "+format+"\n", args...)
}

// machineInfo describes the machine and the code measured.
func machineInfo(ctx context.Context, dir string) string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "linux"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel += " " + strings.TrimSpace(string(data))
	}
	goVersion, err := goOutput(ctx, dir, "env", "GOVERSION")
	if err != nil {
		goVersion = runtime.Version()
	}
	s := fmt.Sprintf("%s, nproc %d, %s, %s", cpu, runtime.NumCPU(), goVersion, kernel)
	if rev, err := gitOutput(ctx, dir, "rev-parse", "--short=12", "HEAD"); err == nil {
		s += ", commit " + rev
		if st, err := gitOutput(ctx, dir, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
			s += " with uncommitted changes"
		}
	}
	return s
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// loadAverage returns the 1-minute load average, or 0 if unknown.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	if _, err := fmt.Sscan(string(data), &l); err != nil {
		return 0
	}
	return l
}
