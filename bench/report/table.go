package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
)

// run is one round of the suite: the results of its passes, by name.
type run map[string]result

// Benchmark names, as the bench package declares them.
const (
	echo8Raw     = "BenchmarkEcho/8B/raw"
	echo8NetRPC  = "BenchmarkEcho/8B/netrpc"
	echo8IPC     = "BenchmarkEcho/8B/ipc"
	echo4Raw     = "BenchmarkEcho/4KiB/raw"
	echo4NetRPC  = "BenchmarkEcho/4KiB/netrpc"
	echo4IPC     = "BenchmarkEcho/4KiB/ipc"
	echo1MRaw    = "BenchmarkEcho1MiB/raw"
	echo1MNetRPC = "BenchmarkEcho1MiB/netrpc"
	echo1MIPC    = "BenchmarkEcho1MiB/ipc"
	concNetRPC   = "BenchmarkConcurrent16/netrpc"
	concIPC      = "BenchmarkConcurrent16/ipc"
	pipePiped    = "BenchmarkPipelined/pipelined"
	pipeSeq      = "BenchmarkPipelined/sequential"
	streamRaw    = "BenchmarkStream64B/raw"
	streamNetRPC = "BenchmarkStream64B/netrpc"
	streamIPC    = "BenchmarkStream64B/ipc"
	spawnExec    = "BenchmarkSpawn/exec"
	spawnIPC     = "BenchmarkSpawn/ipc"
)

// Units reported by the benchmarks.
const (
	nsOp        = "ns/op"
	allocsOp    = "allocs/op"
	bytesOp     = "B/op"
	childAllocs = "child-allocs/op"
	parentPeak  = "parent-peak-MiB"
	childPeak   = "child-peak-MiB"
	parentGor   = "parent-goroutines"
	childGor    = "child-goroutines"
	callsS      = "calls/s"
	msgsS       = "msgs/s"
	parentCPU   = "parent-cpu-ns/op"
	childCPU    = "child-cpu-ns/op"
	parentGoNew = "parent-gocreated/op"
	childGoNew  = "child-gocreated/op"
	parentCtxsw = "parent-ctxsw/op"
	childCtxsw  = "child-ctxsw/op"
)

// The issue's fixed counts, for which its resource targets are stated.
const (
	issueStreamCount = 100000
	issueBigCalls    = 1000
	// goroutineBound is what "bounded goroutines" is taken to mean: at
	// most this many in either process, however many messages stream.
	goroutineBound = 100
	peakBoundMiB   = 64
)

// figures computes medians and ratios over the runs of a report.
type figures struct{ runs []run }

// values returns the metric of a benchmark in every run that has it.
func (f figures) values(name, unit string) []float64 {
	var vs []float64
	for _, r := range f.runs {
		if res, ok := r[name]; ok {
			if v, ok := res.metrics[unit]; ok {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

func (f figures) median(name, unit string) (float64, bool) {
	vs := f.values(name, unit)
	if len(vs) == 0 {
		return 0, false
	}
	return median(vs), true
}

// ratio is the median, lowest and highest, over the runs that have both,
// of num's metric divided by den's in the same run.
type ratio struct {
	med, lo, hi float64
	ok          bool
}

func (f figures) ratio(num, den, unit string) ratio {
	var rs []float64
	for _, r := range f.runs {
		a, aok := r[num]
		b, bok := r[den]
		if !aok || !bok {
			continue
		}
		av, aok := a.metrics[unit]
		bv, bok := b.metrics[unit]
		if !aok || !bok || bv == 0 {
			continue
		}
		rs = append(rs, av/bv)
	}
	if len(rs) == 0 {
		return ratio{}
	}
	return ratio{med: median(rs), lo: slices.Min(rs), hi: slices.Max(rs), ok: true}
}

// iterations returns the iteration count of a benchmark in its runs (the
// fixed counts of -benchtime Nx), or 0.
func (f figures) iterations(name string) int {
	for _, r := range f.runs {
		if res, ok := r[name]; ok {
			return res.n
		}
	}
	return 0
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Formatting.

const dash = "–"

func (f figures) dur(name string) string {
	v, ok := f.median(name, nsOp)
	if !ok {
		return dash
	}
	return formatDuration(v)
}

func formatDuration(ns float64) string {
	switch {
	case ns < 1e3:
		return fmt.Sprintf("%.0f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.1f us", ns/1e3)
	case ns < 1e9:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	}
	return fmt.Sprintf("%.2f s", ns/1e9)
}

func (f figures) rate(name, unit, label string) string {
	v, ok := f.median(name, unit)
	if !ok {
		return dash
	}
	return formatRate(v) + " " + label
}

func formatRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func (f figures) num(name, unit string) string {
	v, ok := f.median(name, unit)
	if !ok {
		return dash
	}
	return formatNum(v)
}

func formatNum(v float64) string {
	switch {
	case v == math.Trunc(v) || v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// pair formats "parent / child" for one benchmark.
func (f figures) pair(name, parentUnit, childUnit, suffix string) string {
	p, pok := f.median(name, parentUnit)
	c, cok := f.median(name, childUnit)
	if !pok || !cok {
		return dash
	}
	return formatNum(p) + " / " + formatNum(c) + suffix
}

// pairScaled is pair with both figures multiplied by scale.
func (f figures) pairScaled(name, parentUnit, childUnit string, scale float64) string {
	p, pok := f.median(name, parentUnit)
	c, cok := f.median(name, childUnit)
	if !pok || !cok {
		return dash
	}
	return formatNum(p*scale) + " / " + formatNum(c*scale)
}

func (r ratio) String() string {
	if !r.ok {
		return dash
	}
	if r.lo == r.hi {
		return formatRatio(r.med)
	}
	return fmt.Sprintf("%s (%s–%s)", formatRatio(r.med), formatRatio(r.lo), formatRatio(r.hi))
}

func formatRatio(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0fx", v)
	}
	return fmt.Sprintf("%.2fx", v)
}

// A target of the issue, met or not.
type target struct {
	what     string
	measured string
	met      bool
	known    bool // false when the run lacks a figure it needs
	note     string
}

func (t target) verdict() string {
	switch {
	case !t.known:
		return "not measured"
	case t.met:
		return "**met**"
	}
	return "not met"
}

func (f figures) targets() []target {
	var ts []target
	ratioTarget := func(what string, r ratio, ok func(float64) bool) {
		ts = append(ts, target{what: what, measured: r.String(), met: r.ok && ok(r.med), known: r.ok})
	}
	ratioTarget("8 B round trip at most 2x raw", f.ratio(echo8IPC, echo8Raw, nsOp), func(v float64) bool { return v <= 2 })
	ratioTarget("1 MiB round trip at most 1.5x raw", f.ratio(echo1MIPC, echo1MRaw, nsOp), func(v float64) bool { return v <= 1.5 })
	ratioTarget("16 concurrent callers at least 2x net/rpc's calls/s", f.ratio(concIPC, concNetRPC, callsS), func(v float64) bool { return v >= 2 })
	ratioTarget("streaming at least 3x raw's msgs/s (one write per message)", f.ratio(streamIPC, streamRaw, msgsS), func(v float64) bool { return v >= 3 })

	countNote := func(name string, issue int, what string) string {
		if n := f.iterations(name); n != 0 && n != issue {
			return fmt.Sprintf("at %d %s; the target is stated for %d", n, what, issue)
		}
		return ""
	}
	bound := func(what, name, pu, cu string, limit float64, strict bool, unit, note string) {
		p, pok := f.median(name, pu)
		c, cok := f.median(name, cu)
		t := target{what: what, known: pok && cok, note: note}
		if t.known {
			t.measured = formatNum(p) + " / " + formatNum(c) + unit
			if strict {
				t.met = p < limit && c < limit
			} else {
				t.met = p <= limit && c <= limit
			}
		}
		ts = append(ts, t)
	}
	streamNote := countNote(streamIPC, issueStreamCount, "messages")
	bound(fmt.Sprintf("streaming with bounded goroutines (at most %d per process), parent / child", goroutineBound),
		streamIPC, parentGor, childGor, goroutineBound, false, "", streamNote)
	bound(fmt.Sprintf("streaming under %d MiB peak RSS, parent / child", peakBoundMiB),
		streamIPC, parentPeak, childPeak, peakBoundMiB, true, " MiB", streamNote)

	allocs, ok := f.median(echo8IPC, allocsOp)
	t := target{what: "at most 10 allocations per small call (caller; the child's in the resources table)", known: ok}
	if ok {
		t.measured, t.met = formatNum(allocs), allocs <= 10
	}
	ts = append(ts, t)

	bound(fmt.Sprintf("peak RSS under %d MiB across 1000 calls of 1 MiB, parent / child", peakBoundMiB),
		echo1MIPC, parentPeak, childPeak, peakBoundMiB, true, " MiB", countNote(echo1MIPC, issueBigCalls, "calls"))
	ratioTarget("spawn to first call at most 1.2x the bare exec", f.ratio(spawnIPC, spawnExec, nsOp), func(v float64) bool { return v <= 1.2 })
	return ts
}

// render writes the report's tables in markdown.
func (f figures) render(w io.Writer) {
	pr := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	row := func(cells ...string) { pr("| %s |\n", strings.Join(cells, " | ")) }

	streamN := f.iterations(streamIPC)
	bigN := f.iterations(echo1MIPC)

	pr("### Speed\n\n")
	row("per call, cross-process", "raw socketpair", "net/rpc", "ours", "net/rpc ÷ raw", "ours ÷ raw")
	row("---", "---", "---", "---", "---", "---")
	for _, e := range []struct{ label, raw, netrpc, ipc string }{
		{"round trip, 8 B", echo8Raw, echo8NetRPC, echo8IPC},
		{"round trip, 4 KiB", echo4Raw, echo4NetRPC, echo4IPC},
		{fmt.Sprintf("round trip, 1 MiB (%d calls)", bigN), echo1MRaw, echo1MNetRPC, echo1MIPC},
	} {
		row(e.label, f.dur(e.raw), f.dur(e.netrpc), f.dur(e.ipc),
			f.ratio(e.netrpc, e.raw, nsOp).String(), f.ratio(e.ipc, e.raw, nsOp).String())
	}
	row("makeEcho().echo(), pipelined, 8 B", dash, dash, f.dur(pipePiped), dash, f.ratio(pipePiped, echo8Raw, nsOp).String()+" of raw 8 B")
	row("makeEcho(), then echo(), 8 B", dash, dash, f.dur(pipeSeq), dash, f.ratio(pipeSeq, echo8Raw, nsOp).String()+" of raw 8 B")
	row("16 goroutines, 8 B calls", dash, f.rate(concNetRPC, callsS, "calls/s"), f.rate(concIPC, callsS, "calls/s"),
		dash, f.ratio(concIPC, concNetRPC, callsS).String()+" of net/rpc")
	row(fmt.Sprintf("streaming %d x 64 B, one way", streamN), f.rate(streamRaw, msgsS, "msgs/s"), f.rate(streamNetRPC, msgsS, "msgs/s"),
		f.rate(streamIPC, msgsS, "msgs/s"), f.ratio(streamNetRPC, streamRaw, msgsS).String(), f.ratio(streamIPC, streamRaw, msgsS).String())
	row("spawn to first completed call", f.dur(spawnExec)+" (bare exec)", dash, f.dur(spawnIPC), dash, f.ratio(spawnIPC, spawnExec, nsOp).String()+" of bare exec")

	pr("\n### Resources\n\n")
	row("", "raw socketpair", "net/rpc", "ours")
	row("---", "---", "---", "---")
	row("allocations per 8 B call, caller", f.num(echo8Raw, allocsOp), f.num(echo8NetRPC, allocsOp), f.num(echo8IPC, allocsOp))
	row("allocations per 8 B call, child", f.num(echo8Raw, childAllocs), f.num(echo8NetRPC, childAllocs), f.num(echo8IPC, childAllocs))
	row("bytes allocated per 8 B call, caller", f.num(echo8Raw, bytesOp), f.num(echo8NetRPC, bytesOp), f.num(echo8IPC, bytesOp))
	row("CPU per 8 B call, parent / child (us)", f.pairScaled(echo8Raw, parentCPU, childCPU, 1e-3), f.pairScaled(echo8NetRPC, parentCPU, childCPU, 1e-3), f.pairScaled(echo8IPC, parentCPU, childCPU, 1e-3))
	row("goroutines started per 8 B call, parent / child", f.pair(echo8Raw, parentGoNew, childGoNew, ""), f.pair(echo8NetRPC, parentGoNew, childGoNew, ""), f.pair(echo8IPC, parentGoNew, childGoNew, ""))
	row("context switches per 8 B call, parent / child", f.pair(echo8Raw, parentCtxsw, childCtxsw, ""), f.pair(echo8NetRPC, parentCtxsw, childCtxsw, ""), f.pair(echo8IPC, parentCtxsw, childCtxsw, ""))
	row("CPU per 1 MiB call, parent / child (us)", f.pairScaled(echo1MRaw, parentCPU, childCPU, 1e-3), f.pairScaled(echo1MNetRPC, parentCPU, childCPU, 1e-3), f.pairScaled(echo1MIPC, parentCPU, childCPU, 1e-3))
	row(fmt.Sprintf("peak RSS over %d calls of 1 MiB, parent / child", bigN),
		f.pair(echo1MRaw, parentPeak, childPeak, " MiB"), f.pair(echo1MNetRPC, parentPeak, childPeak, " MiB"), f.pair(echo1MIPC, parentPeak, childPeak, " MiB"))
	row(fmt.Sprintf("streaming %d x 64 B: peak goroutines, parent / child", streamN),
		f.pair(streamRaw, parentGor, childGor, ""), f.pair(streamNetRPC, parentGor, childGor, ""), f.pair(streamIPC, parentGor, childGor, ""))
	row("streaming: goroutines started per message, parent / child",
		f.pair(streamRaw, parentGoNew, childGoNew, ""), f.pair(streamNetRPC, parentGoNew, childGoNew, ""), f.pair(streamIPC, parentGoNew, childGoNew, ""))
	row("streaming: CPU per message, parent / child (us)",
		f.pairScaled(streamRaw, parentCPU, childCPU, 1e-3), f.pairScaled(streamNetRPC, parentCPU, childCPU, 1e-3), f.pairScaled(streamIPC, parentCPU, childCPU, 1e-3))
	row(fmt.Sprintf("streaming %d x 64 B: peak RSS, parent / child", streamN),
		f.pair(streamRaw, parentPeak, childPeak, " MiB"), f.pair(streamNetRPC, parentPeak, childPeak, " MiB"), f.pair(streamIPC, parentPeak, childPeak, " MiB"))
	row("8 B calls one at a time: peak goroutines, parent / child",
		f.pair(echo8Raw, parentGor, childGor, ""), f.pair(echo8NetRPC, parentGor, childGor, ""), f.pair(echo8IPC, parentGor, childGor, ""))
	row("16 goroutines calling: peak goroutines, parent / child",
		dash, f.pair(concNetRPC, parentGor, childGor, ""), f.pair(concIPC, parentGor, childGor, ""))
	row("16 goroutines calling: peak RSS, parent / child",
		dash, f.pair(concNetRPC, parentPeak, childPeak, " MiB"), f.pair(concIPC, parentPeak, childPeak, " MiB"))

	pr("\n### Targets\n\n")
	row("target (from the issue)", "measured", "")
	row("---", "---", "---")
	for _, t := range f.targets() {
		m := t.measured
		if m == "" {
			m = dash
		}
		if t.note != "" {
			m += " (" + t.note + ")"
		}
		row(t.what, m, t.verdict())
	}

	pr("\n### Every figure (medians)\n\n")
	units := []string{nsOp, bytesOp, allocsOp, childAllocs, parentCPU, childCPU, parentGoNew, childGoNew,
		parentCtxsw, childCtxsw, parentPeak, childPeak, parentGor, childGor, callsS, msgsS}
	row(append([]string{"benchmark", "runs"}, units...)...)
	row(slices.Repeat([]string{"---"}, len(units)+2)...)
	for _, name := range f.names() {
		cells := []string{strings.TrimPrefix(name, "Benchmark"), fmt.Sprint(len(f.values(name, nsOp)))}
		for _, u := range units {
			cells = append(cells, f.num(name, u))
		}
		row(cells...)
	}
}

// names returns every benchmark name in the runs, in the order of the
// first run that has it.
func (f figures) names() []string {
	seen := make(map[string]int)
	var names []string
	for _, r := range f.runs {
		for name := range r {
			if _, ok := seen[name]; !ok {
				seen[name] = len(seen)
				names = append(names, name)
			}
		}
	}
	order := benchOrder()
	sort.SliceStable(names, func(i, j int) bool {
		oi, iok := order[names[i]]
		oj, jok := order[names[j]]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return names[i] < names[j]
	})
	return names
}

func benchOrder() map[string]int {
	m := make(map[string]int)
	for i, n := range []string{
		echo8Raw, echo8NetRPC, echo8IPC, echo4Raw, echo4NetRPC, echo4IPC, echo1MRaw, echo1MNetRPC, echo1MIPC,
		concNetRPC, concIPC, pipePiped, pipeSeq, streamRaw, streamNetRPC, streamIPC, spawnExec, spawnIPC,
	} {
		m[n] = i
	}
	return m
}
