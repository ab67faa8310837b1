package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// A result is one benchmark line of `go test -bench` output.
type result struct {
	name    string             // without the -GOMAXPROCS suffix
	n       int                // iterations
	metrics map[string]float64 // by unit: "ns/op", "allocs/op", "msgs/s"...
}

// procsSuffix is the "-2" that go test appends to a benchmark's name when
// GOMAXPROCS is not 1.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// parse reads `go test -bench` output and returns its benchmark results
// in order, and the names of the benchmarks or tests reported as failed.
// Other lines (headers, PASS, logs) are ignored.
func parse(r io.Reader) (results []result, failed []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--- FAIL: "); ok {
			failed = append(failed, strings.Fields(rest)[0])
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		res, ok, err := parseLine(line)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			results = append(results, res)
		}
	}
	return results, failed, sc.Err()
}

// parseLine parses "BenchmarkX/y-2  1000  1234 ns/op  5.0 unit ...". A
// line with a name and nothing else (a benchmark that is about to fail,
// or whose result follows on another line) gives ok=false.
func parseLine(line string) (res result, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) < 4 {
		return result{}, false, nil
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return result{}, false, nil // not a result line
	}
	if (len(f)-2)%2 != 0 {
		return result{}, false, fmt.Errorf("benchmark line with an odd number of value/unit fields: %q", line)
	}
	res = result{name: procsSuffix.ReplaceAllString(f[0], ""), n: n, metrics: make(map[string]float64)}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return result{}, false, fmt.Errorf("benchmark line %q: value %q: %w", line, f[i], err)
		}
		res.metrics[f[i+1]] = v
	}
	return res, true, nil
}
