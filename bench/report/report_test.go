package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	res, ok, err := parseLine("BenchmarkEcho/8B/ipc-2 \t 8299\t 130364 ns/op\t 0.06 MB/s\t 48.78 child-allocs/op\t 2538 B/op\t 42 allocs/op")
	if err != nil || !ok {
		t.Fatalf("parseLine: %v, %v", ok, err)
	}
	if res.name != "BenchmarkEcho/8B/ipc" || res.n != 8299 {
		t.Errorf("name, n = %q, %d", res.name, res.n)
	}
	want := map[string]float64{"ns/op": 130364, "MB/s": 0.06, "child-allocs/op": 48.78, "B/op": 2538, "allocs/op": 42}
	if len(res.metrics) != len(want) {
		t.Errorf("metrics %v; want %v", res.metrics, want)
	}
	for u, v := range want {
		if res.metrics[u] != v {
			t.Errorf("%s = %v; want %v", u, res.metrics[u], v)
		}
	}

	for _, line := range []string{
		"BenchmarkStream64B/ipc-2         \t",                                   // name only: figures follow later
		"BenchmarkStream64B/ipc-2  time=2026-11-23T14:06:48Z level=ERROR msg=x", // a log line after the name
		"BenchmarkEcho/8B",
	} {
		if _, ok, err := parseLine(line); ok || err != nil {
			t.Errorf("parseLine(%q) = %v, %v; want ignored", line, ok, err)
		}
	}
	if _, _, err := parseLine("BenchmarkX-2 10 5 ns/op 3"); err == nil {
		t.Error("a dangling value was accepted")
	}
	if _, _, err := parseLine("BenchmarkX-2 10 five ns/op"); err == nil {
		t.Error("a value that is no number was accepted")
	}
}

func TestParseFailures(t *testing.T) {
	out := "BenchmarkA-2 10 5 ns/op\n--- FAIL: BenchmarkB/ipc\n    x_test.go:1: boom\n--- FAIL: BenchmarkB\nFAIL\n"
	results, failed, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].name != "BenchmarkA" {
		t.Errorf("results %+v", results)
	}
	if strings.Join(failed, ",") != "BenchmarkB/ipc,BenchmarkB" {
		t.Errorf("failed %q", failed)
	}
}

func TestRatioAndMedian(t *testing.T) {
	runs := []run{
		{"a": {metrics: map[string]float64{"ns/op": 30}}, "b": {metrics: map[string]float64{"ns/op": 10}}},
		{"a": {metrics: map[string]float64{"ns/op": 40}}, "b": {metrics: map[string]float64{"ns/op": 20}}},
		{"a": {metrics: map[string]float64{"ns/op": 10}}, "b": {metrics: map[string]float64{"ns/op": 10}}},
		{"a": {metrics: map[string]float64{"ns/op": 99}}}, // no b: no ratio
	}
	f := figures{runs}
	r := f.ratio("a", "b", "ns/op")
	if !r.ok || r.med != 2 || r.lo != 1 || r.hi != 3 {
		t.Errorf("ratio = %+v; want median 2 of 3, 1, 2", r)
	}
	if m, _ := f.median("a", "ns/op"); m != 35 {
		t.Errorf("median = %v; want 35 (of 10 30 40 99)", m)
	}
	if r := f.ratio("a", "missing", "ns/op"); r.ok || r.String() != dash {
		t.Errorf("ratio to a missing benchmark = %+v", r)
	}
	if got := r.String(); got != "2.00x (1.00x–3.00x)" {
		t.Errorf("String = %q", got)
	}
}

func TestTargets(t *testing.T) {
	var out bytes.Buffer
	if err := fromFile(&out, "testdata/two-rounds.txt"); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	if !strings.Contains(report, "medians of 2 runs") {
		t.Errorf("rounds not told apart:\n%s", report)
	}
	verdicts := map[string]string{}
	for _, line := range strings.Split(report, "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) == 3 {
			verdicts[strings.TrimPrefix(cells[0], "| ")] = strings.TrimSuffix(cells[2], " |")
		}
	}
	for what, want := range map[string]string{
		// 30/20 and 45/25: median 1.65x.
		"8 B round trip at most 2x raw": "**met**",
		// 500/400 and 700/400: median 1.5x, at the limit.
		"1 MiB round trip at most 1.5x raw": "**met**",
		// No Concurrent16 in the file.
		"16 concurrent callers at least 2x net/rpc's calls/s": "not measured",
		// 3x in both runs.
		"streaming at least 3x raw's msgs/s (one write per message)": "**met**",
		// Child goroutines: median of 8 and 101 is 54.5.
		"streaming with bounded goroutines (at most 100 per process), parent / child": "**met**",
		"streaming under 64 MiB peak RSS, parent / child":                             "**met**",
		// Median of 12 and 8 is 10.
		"at most 10 allocations per small call (caller; the child's in the resources table)": "**met**",
		// Child: median of 50 and 70 is 60.
		"peak RSS under 64 MiB across 1000 calls of 1 MiB, parent / child": "**met**",
		"spawn to first call at most 1.2x the bare exec":                   "not measured",
	} {
		if got, ok := verdicts[what]; !ok {
			t.Errorf("no target %q in\n%s", what, report)
		} else if got != want {
			t.Errorf("%s: %q; want %q", what, got, want)
		}
	}
	for _, want := range []string{
		"| round trip, 8 B | 22.5 us | – | 37.5 us | – | 1.65x (1.50x–1.80x) |",
		"| streaming 100000 x 64 B, one way | 400.0k msgs/s | – | 1.20M msgs/s | – | 3.00x |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{formatDuration(950), "950 ns"},
		{formatDuration(36876), "36.9 us"},
		{formatDuration(2.5e6), "2.50 ms"},
		{formatRate(431987), "432.0k"},
		{formatRate(1.2e6), "1.20M"},
		{formatNum(0.0004), "0.00"},
		{formatNum(48.78), "48.8"},
		{formatNum(117772), "117772"},
		{formatRatio(3.704), "3.70x"},
		{formatRatio(35.2), "35x"},
	} {
		if c.got != c.want {
			t.Errorf("got %q; want %q", c.got, c.want)
		}
	}
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 3, 2}) != 2.5 {
		t.Error("median")
	}
}
