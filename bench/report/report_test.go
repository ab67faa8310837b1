package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	res, ok, err := parseLine("BenchmarkEcho/8B/mp-2 \t 8299\t 130364 ns/op\t 0.06 MB/s\t 48.78 child-allocs/op\t 2538 B/op\t 42 allocs/op")
	if err != nil || !ok {
		t.Fatalf("parseLine: %v, %v", ok, err)
	}
	if res.name != "BenchmarkEcho/8B/mp" || res.n != 8299 {
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
		"BenchmarkStream64B/mp-2         \t",                                   // name only: figures follow later
		"BenchmarkStream64B/mp-2  time=2026-11-23T14:06:48Z level=ERROR msg=x", // a log line after the name
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
	out := "BenchmarkA-2 10 5 ns/op\n--- FAIL: BenchmarkB/mp\n    x_test.go:1: boom\n--- FAIL: BenchmarkB\nFAIL\n"
	results, failed, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].name != "BenchmarkA" {
		t.Errorf("results %+v", results)
	}
	if strings.Join(failed, ",") != "BenchmarkB/mp,BenchmarkB" {
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
	f := figures{runs: runs}
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
	type verdict struct{ measured, verdict, capnp string }
	verdicts := map[string]verdict{}
	for _, line := range strings.Split(report, "\n") {
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |"), " | ")
		if len(cells) == 4 {
			verdicts[cells[0]] = verdict{cells[1], cells[2], cells[3]}
		}
	}
	for what, want := range map[string]verdict{
		// 30/20 and 45/25: median 1.65x; capnpc-go 40/20 and 40/25.
		"8 B round trip at most 1.5x raw": {"1.65x (1.50x–1.80x)", "not met", "1.80x (1.60x–2.00x)"},
		// Child: median of 3.0 and 3.2 is 3.1.
		"8 B round trip: at most 3.0 context switches per call per side, parent / child": {"2.90 / 3.10", "not met", "2.40 / 2.60"},
		// 480/400 and 520/400: median 1.25x. No Data echo for capnpc-go.
		"1 MiB round trip at most 1.3x raw (Data: the caller lends it, mp.Lend, and borrows the result, mp.Borrow)": {"1.25x (1.20x–1.30x)", "**met**", "–"},
		// 600/400 and 700/400: median 1.625x. No capnpc-go run in the file.
		"1 MiB round trip, plain path, at most 1.6x raw (Text: Go strings both ways)": {"1.62x (1.50x–1.75x)", "not met", "–"},
		// 2.2x and 2.0x.
		"16 concurrent callers, one capability each, at least 2x net/rpc's calls/s":   {"2.10x (2.00x–2.20x)", "**met**", "–"},
		"16 concurrent callers, one shared capability, at least 2x net/rpc's calls/s": {"1.20x", "not met", "–"},
		// 1.5x in both runs, at the limit.
		"streaming 64 B messages at least 1.5x raw's msgs/s (one write per message)": {"1.50x; CPU per message, parent / child: 1.20 / 0.90 us", "**met**", "–"},
		// Child goroutines: median of 8 and 101 is 54.5.
		"streaming with bounded goroutines (at most 100 per process), parent / child": {"9 / 54.5", "**met**", "–"},
		"streaming under 64 MiB peak RSS, parent / child":                             {"30 / 30 MiB", "**met**", "–"},
		// Child: median of 3.9 and 4.0 is 3.95.
		"at most 4 allocations per small call (8 B) on each side, parent / child": {"4 / 3.95", "**met**", "12.2 / 9.01"},
		// Child: median of 50 and 70 is 60.
		"peak RSS under 64 MiB across 1000 calls of 1 MiB, Text, parent / child": {"20 / 60 MiB", "**met**", "–"},
		// 64 is not under 64.
		"peak RSS under 64 MiB across 1000 calls of 1 MiB, Data, parent / child": {"20 / 64 MiB", "not met", "–"},
		"spawn to first call at most 1.2x a bare exec":                           {"–", "not measured", "–"},
	} {
		if got, ok := verdicts[what]; !ok {
			t.Errorf("no target %q in\n%s", what, report)
		} else if got != want {
			t.Errorf("%s: %+v; want %+v", what, got, want)
		}
	}
	for _, want := range []string{
		"| round trip, 8 B | 22.5 us | – | 37.5 us | 40.0 us | – | 1.65x (1.50x–1.80x) | 1.80x (1.60x–2.00x) |",
		"| streaming 100000 x 64 B, one way | 400.0k msgs/s | – | 600.0k msgs/s | – | – | 1.50x | – |",
		"| 16 goroutines, 8 B calls, one capability each | – | 50.0k calls/s | 105.0k calls/s | – | – | 2.10x (2.00x–2.20x) of net/rpc | – |",
		"| allocations per 8 B call, parent / child | 0 / 0.00 | – | 4 / 3.95 | 12.2 / 9.01 | 10 / 8 (caller / server) |",
		"| caller: generated `Echo` call, settled at once | 900 ns | 905 ns | 10 | 520 |",
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

// TestPeers checks the peers' columns: their figures, the generated
// path's ratios to them, and the target of gRPC's streaming rate.
func TestPeers(t *testing.T) {
	var out bytes.Buffer
	if err := fromFile(&out, "testdata/with-peers.txt"); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{
		"medians of 2 runs",
		"| per call, cross-process | raw socketpair | net/rpc | generated | capnpc-go | net/rpc ÷ raw | generated ÷ raw | capnpc-go ÷ raw | gRPC | go-capnp rpc | generated ÷ gRPC | generated ÷ go-capnp rpc |",
		// 30/50 and 45/50; 30/60 and 45/60.
		"| round trip, 8 B | 22.5 us | – | 37.5 us | – | – | 1.65x (1.50x–1.80x) | – | 50.0 us | 60.0 us | 0.75x (0.60x–0.90x) | 0.62x (0.50x–0.75x) |",
		// Rates: 600/800 and 600/480; 600/26 in both.
		"| streaming 100000 x 64 B, one way | 400.0k msgs/s | – | 600.0k msgs/s | – | – | 1.50x | – | 640.0k msgs/s | 26.0k msgs/s | 1.00x (0.75x–1.25x) | 23x |",
		// A peer's spawn beside the bare exec of its own binary.
		"| spawn to first completed call | 2.00 ms (bare exec) | – | 2.40 ms | – | – | 1.20x of bare exec | – | 3.00 ms (1.50x of its bare exec) | – | 0.80x | – |",
		"| context switches per 8 B call, parent / child | 2 / 2.10 | – | 2.90 / 3 | – | 2.80 / 2.90 | 3.70 / 3.60 |  |",
		"| CPU per 8 B call, parent / child (us) | – | – | – | – | 30 / 31 | 41 / 35 | – |",
		"| streaming 100000 x 64 B: peak goroutines, parent / child | – | – | – | – | 11 / 7 | 57000 / 8 |  |",
		// At least 1x gRPC's rate: a median of 1.00x is met.
		"| streaming 64 B messages at least gRPC's msgs/s in the same run (its client-streaming call) | 1.00x (0.75x–1.25x) | **met** | – |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}

// TestNoPeers checks that a report without the peers' results says so and
// leaves their columns out.
func TestNoPeers(t *testing.T) {
	var out bytes.Buffer
	if err := fromFile(&out, "testdata/two-rounds.txt"); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{
		"The peers (gRPC, go-capnp's rpc) are not in this report: the saved output has none of their results.",
		"| per call, cross-process | raw socketpair | net/rpc | generated | capnpc-go | net/rpc ÷ raw | generated ÷ raw | capnpc-go ÷ raw |\n",
		"| streaming 64 B messages at least gRPC's msgs/s in the same run (its client-streaming call) | – (no gRPC figure: the saved output has none of their results) | not measured | – |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "go-capnp rpc |") {
		t.Errorf("a report without the peers has their columns:\n%s", report)
	}
}
