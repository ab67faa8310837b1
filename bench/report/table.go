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

// Benchmark names, as packages bench and bench/floor declare them. In
// package bench, "mp" is the generated path (mpgen's interfaces through
// ipc), "mpdata" the same with the Data echo, "capnp" the capnpc-go path.
const (
	echo8Raw      = "BenchmarkEcho/8B/raw"
	echo8NetRPC   = "BenchmarkEcho/8B/netrpc"
	echo8MP       = "BenchmarkEcho/8B/mp"
	echo8Capnp    = "BenchmarkEcho/8B/capnp"
	echo4Raw      = "BenchmarkEcho/4KiB/raw"
	echo4NetRPC   = "BenchmarkEcho/4KiB/netrpc"
	echo4MP       = "BenchmarkEcho/4KiB/mp"
	echo4Capnp    = "BenchmarkEcho/4KiB/capnp"
	echo1MRaw     = "BenchmarkEcho1MiB/raw"
	echo1MNetRPC  = "BenchmarkEcho1MiB/netrpc"
	echo1MMP      = "BenchmarkEcho1MiB/mp"
	echo1MMPData  = "BenchmarkEcho1MiB/mpdata"
	echo1MCapnp   = "BenchmarkEcho1MiB/capnp"
	concNetRPC    = "BenchmarkConcurrent16/netrpc"
	concMPShared  = "BenchmarkConcurrent16/mp/shared"
	concMPEach    = "BenchmarkConcurrent16/mp/percaller"
	concCapShared = "BenchmarkConcurrent16/capnp/shared"
	concCapEach   = "BenchmarkConcurrent16/capnp/percaller"
	pipeMP        = "BenchmarkPipelined/mp/pipelined"
	seqMP         = "BenchmarkPipelined/mp/sequential"
	pipeCapnp     = "BenchmarkPipelined/capnp/pipelined"
	seqCapnp      = "BenchmarkPipelined/capnp/sequential"
	streamRaw     = "BenchmarkStream64B/raw"
	streamNetRPC  = "BenchmarkStream64B/netrpc"
	streamMP      = "BenchmarkStream64B/mp"
	streamCapnp   = "BenchmarkStream64B/capnp"
	spawnExec     = "BenchmarkSpawn/exec"
	spawnMP       = "BenchmarkSpawn/mp"
	spawnCapnp    = "BenchmarkSpawn/capnp"

	// The peers module's (bench/peers): gRPC over a unix socket, its
	// bytes echo (grpcdata), go-capnp's rpc package, and the bare exec of
	// the peers' own test binary.
	echo8GRPC       = "BenchmarkEcho/8B/grpc"
	echo8GoCapnp    = "BenchmarkEcho/8B/gocapnp"
	echo4GRPC       = "BenchmarkEcho/4KiB/grpc"
	echo4GoCapnp    = "BenchmarkEcho/4KiB/gocapnp"
	echo1MGRPC      = "BenchmarkEcho1MiB/grpc"
	echo1MGRPCData  = "BenchmarkEcho1MiB/grpcdata"
	echo1MGoCapnp   = "BenchmarkEcho1MiB/gocapnp"
	concGRPC        = "BenchmarkConcurrent16/grpc"
	concGoCapShared = "BenchmarkConcurrent16/gocapnp/shared"
	concGoCapEach   = "BenchmarkConcurrent16/gocapnp/percaller"
	pipeGoCapnp     = "BenchmarkPipelined/gocapnp/pipelined"
	seqGoCapnp      = "BenchmarkPipelined/gocapnp/sequential"
	streamGRPC      = "BenchmarkStream64B/grpc"
	streamGoCapnp   = "BenchmarkStream64B/gocapnp"
	spawnPeersExec  = "BenchmarkSpawn/peersexec"
	spawnGRPC       = "BenchmarkSpawn/grpc"
	spawnGoCapnp    = "BenchmarkSpawn/gocapnp"

	floorCaller       = "BenchmarkCaller/echo8B"
	floorPromise      = "BenchmarkCaller/promise"
	floorServer       = "BenchmarkServer/echo8B"
	floorServerPush   = "BenchmarkServer/push64B"
	floorServerQueued = "BenchmarkServerQueued"
	floorStream       = "BenchmarkStream"
)

// Units reported by the benchmarks.
const (
	nsOp         = "ns/op"
	allocsOp     = "allocs/op"
	bytesOp      = "B/op"
	parentAllocs = "parent-allocs/op"
	childAllocs  = "child-allocs/op"
	parentPeak   = "parent-peak-MiB"
	childPeak    = "child-peak-MiB"
	parentGor    = "parent-goroutines"
	childGor     = "child-goroutines"
	callsS       = "calls/s"
	msgsS        = "msgs/s"
	parentCPU    = "parent-cpu-ns/op"
	childCPU     = "child-cpu-ns/op"
	parentGoNew  = "parent-gocreated/op"
	childGoNew   = "child-gocreated/op"
	parentCtxsw  = "parent-ctxsw/op"
	childCtxsw   = "child-ctxsw/op"
	cpuOp        = "cpu-ns/op" // bench/floor's, one process
)

// The fixed counts for which the resource targets are stated, and the
// targets' limits.
const (
	issueStreamCount = 100000
	issueBigCalls    = 1000
	// goroutineBound is what "bounded goroutines" is taken to mean: at
	// most this many in either process, however many messages stream.
	goroutineBound = 100
	peakBoundMiB   = 64
)

// figures computes medians and ratios over the runs of a report.
type figures struct {
	runs []run
	// peersMissing says why the runs have no results of the peers
	// module, if they have none.
	peersMissing string
}

// peerNames are the peers' benchmarks; hasPeers looks for any of them.
var peerNames = []string{
	echo8GRPC, echo8GoCapnp, echo4GRPC, echo4GoCapnp, echo1MGRPC, echo1MGRPCData, echo1MGoCapnp,
	concGRPC, concGoCapEach, concGoCapShared, pipeGoCapnp, seqGoCapnp, streamGRPC, streamGoCapnp,
	spawnPeersExec, spawnGRPC, spawnGoCapnp,
}

// hasPeers reports whether any run has a result of the peers module.
func (f figures) hasPeers() bool {
	for _, r := range f.runs {
		for _, n := range peerNames {
			if _, ok := r[n]; ok {
				return true
			}
		}
	}
	return false
}

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

// floorPair formats "caller / server (label)" from two bench/floor
// benchmarks.
func (f figures) floorPair(caller, server, unit string, scale float64, label string) string {
	c, cok := f.median(caller, unit)
	s, sok := f.median(server, unit)
	if !cok || !sok {
		return dash
	}
	return formatNum(c*scale) + " / " + formatNum(s*scale) + " (" + label + ")"
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

// of is the ratio followed by what it is a ratio of, or a dash.
func (r ratio) of(what string) string {
	if !r.ok {
		return dash
	}
	return r.String() + " " + what
}

func formatRatio(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0fx", v)
	}
	return fmt.Sprintf("%.2fx", v)
}

// A target for the generated path, met or not, with the capnpc-go path's
// figure beside it for comparison.
type target struct {
	what     string
	measured string
	met      bool
	known    bool // false when the run lacks a figure it needs
	note     string
	capnp    string // the capnpc-go path's figure, or ""
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

// A check is a target's rule applied to one benchmark: the figure shown,
// whether it is known, whether it meets the target.
type check func(name string) (measured string, known, met bool)

// ratioCheck compares name's unit with den's, run by run.
func (f figures) ratioCheck(den, unit string, ok func(float64) bool) check {
	return func(name string) (string, bool, bool) {
		r := f.ratio(name, den, unit)
		return r.String(), r.ok, r.ok && ok(r.med)
	}
}

// boundCheck holds both processes' figures of name under limit (strictly
// if strict).
func (f figures) boundCheck(pu, cu string, limit float64, strict bool, unit string) check {
	return func(name string) (string, bool, bool) {
		p, pok := f.median(name, pu)
		c, cok := f.median(name, cu)
		if !pok || !cok {
			return "", false, false
		}
		met := p <= limit && c <= limit
		if strict {
			met = p < limit && c < limit
		}
		return formatNum(p) + " / " + formatNum(c) + unit, true, met
	}
}

func (f figures) targets() []target {
	var ts []target
	// add applies c to the generated path's benchmark, and to the
	// capnpc-go path's for comparison when capnp is not empty.
	add := func(what string, c check, mp, capnp, note string) {
		t := target{what: what, note: note}
		t.measured, t.known, t.met = c(mp)
		if capnp != "" {
			if m, ok, _ := c(capnp); ok {
				t.capnp = m
			}
		}
		ts = append(ts, t)
	}
	countNote := func(name string, want int, what string) string {
		if n := f.iterations(name); n != 0 && n != want {
			return fmt.Sprintf("at %d %s; the target is stated for %d", n, what, want)
		}
		return ""
	}
	atMost := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	atLeast := func(limit float64) func(float64) bool { return func(v float64) bool { return v >= limit } }

	add("8 B round trip at most 1.5x raw", f.ratioCheck(echo8Raw, nsOp, atMost(1.5)), echo8MP, echo8Capnp, "")
	add("8 B round trip: at most 3.0 context switches per call per side, parent / child",
		f.boundCheck(parentCtxsw, childCtxsw, 3.0, false, ""), echo8MP, echo8Capnp, "")
	bigNote := countNote(echo1MMPData, issueBigCalls, "calls")
	add("1 MiB round trip at most 1.3x raw (Data: the caller lends it, mp.Lend, and borrows the result, mp.Borrow)",
		f.ratioCheck(echo1MRaw, nsOp, atMost(1.3)), echo1MMPData, "", bigNote)
	add("1 MiB round trip, plain path, at most 1.6x raw (Text: Go strings both ways)",
		f.ratioCheck(echo1MRaw, nsOp, atMost(1.6)), echo1MMP, echo1MCapnp, bigNote)
	add("16 concurrent callers, one capability each, at least 2x net/rpc's calls/s",
		f.ratioCheck(concNetRPC, callsS, atLeast(2)), concMPEach, concCapEach, "")
	add("16 concurrent callers, one shared capability, at least 2x net/rpc's calls/s",
		f.ratioCheck(concNetRPC, callsS, atLeast(2)), concMPShared, concCapShared, "")

	streamNote := countNote(streamMP, issueStreamCount, "messages")
	streamRate := func(name string) (string, bool, bool) {
		m, known, met := f.ratioCheck(streamRaw, msgsS, atLeast(1.5))(name)
		if known {
			m += "; CPU per message, parent / child: " + f.pairScaled(name, parentCPU, childCPU, 1e-3) + " us"
		}
		return m, known, met
	}
	add("streaming 64 B messages at least 1.5x raw's msgs/s (one write per message)", streamRate, streamMP, streamCapnp, streamNote)
	grpcNote := streamNote
	if !f.hasPeers() && f.peersMissing != "" {
		grpcNote = "no gRPC figure: " + f.peersMissing
	}
	add("streaming 64 B messages at least gRPC's msgs/s in the same run (its client-streaming call)",
		f.ratioCheck(streamGRPC, msgsS, atLeast(1)), streamMP, streamCapnp, grpcNote)
	add(fmt.Sprintf("streaming with bounded goroutines (at most %d per process), parent / child", goroutineBound),
		f.boundCheck(parentGor, childGor, goroutineBound, false, ""), streamMP, streamCapnp, streamNote)
	add(fmt.Sprintf("streaming under %d MiB peak RSS, parent / child", peakBoundMiB),
		f.boundCheck(parentPeak, childPeak, peakBoundMiB, true, " MiB"), streamMP, streamCapnp, streamNote)
	add("at most 4 allocations per small call (8 B) on each side, parent / child",
		f.boundCheck(parentAllocs, childAllocs, 4, false, ""), echo8MP, echo8Capnp, "")
	add(fmt.Sprintf("peak RSS under %d MiB across 1000 calls of 1 MiB, Text, parent / child", peakBoundMiB),
		f.boundCheck(parentPeak, childPeak, peakBoundMiB, true, " MiB"), echo1MMP, echo1MCapnp, countNote(echo1MMP, issueBigCalls, "calls"))
	add(fmt.Sprintf("peak RSS under %d MiB across 1000 calls of 1 MiB, Data, parent / child", peakBoundMiB),
		f.boundCheck(parentPeak, childPeak, peakBoundMiB, true, " MiB"), echo1MMPData, "", bigNote)
	add("spawn to first call at most 1.2x a bare exec", f.ratioCheck(spawnExec, nsOp, atMost(1.2)), spawnMP, spawnCapnp, "")
	return ts
}

// render writes the report's tables in markdown.
func (f figures) render(w io.Writer) {
	pr := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	row := func(cells ...string) { pr("| %s |\n", strings.Join(cells, " | ")) }
	peers := f.hasPeers()

	streamN := f.iterations(streamMP)
	bigN := f.iterations(echo1MMP)

	pr("Generated: mpgen's plain-Go interfaces through package ipc, which the targets apply to. " +
		"capnpc-go: go-capnp's generated API on the same connection, served by protocol.NewServer (bench/README.md).")
	if peers {
		pr(" The peers (bench/peers, a module of its own): gRPC, grpc-go and protobuf over a unix socket as " +
			"hashicorp/go-plugin runs it; go-capnp rpc, go-capnp's own rpc package with the capnpc-go path's code. " +
			"A ratio to a peer is of the row's figure, generated ÷ peer: below 1 is faster for a time, above 1 for a rate.")
	} else if f.peersMissing != "" {
		pr(" The peers (gRPC, go-capnp's rpc) are not in this report: %s.", f.peersMissing)
	}
	pr("\n\n")

	// peerCells are the peers' figures and the generated path's ratios to
	// them, for the Speed table; none without the peers.
	peerCells := func(grpc, gocapnp, mp, unit string, fig func(string) string) []string {
		if !peers {
			return nil
		}
		cell := func(n string) string {
			if n == "" {
				return dash
			}
			return fig(n)
		}
		ratio := func(n string) string {
			if n == "" || mp == "" {
				return dash
			}
			return f.ratio(mp, n, unit).String()
		}
		return []string{cell(grpc), cell(gocapnp), ratio(grpc), ratio(gocapnp)}
	}
	dur := func(n string) string { return f.dur(n) }
	rate := func(unit, label string) func(string) string {
		return func(n string) string { return f.rate(n, unit, label) }
	}

	pr("### Speed\n\n")
	head := []string{"per call, cross-process", "raw socketpair", "net/rpc", "generated", "capnpc-go", "net/rpc ÷ raw", "generated ÷ raw", "capnpc-go ÷ raw"}
	if peers {
		head = append(head, "gRPC", "go-capnp rpc", "generated ÷ gRPC", "generated ÷ go-capnp rpc")
	}
	row(head...)
	row(slices.Repeat([]string{"---"}, len(head))...)
	for _, e := range []struct{ label, raw, netrpc, mp, capnp, grpc, gocapnp string }{
		{"round trip, 8 B", echo8Raw, echo8NetRPC, echo8MP, echo8Capnp, echo8GRPC, echo8GoCapnp},
		{"round trip, 4 KiB", echo4Raw, echo4NetRPC, echo4MP, echo4Capnp, echo4GRPC, echo4GoCapnp},
		{fmt.Sprintf("round trip, 1 MiB (%d calls), Text", bigN), echo1MRaw, echo1MNetRPC, echo1MMP, echo1MCapnp, echo1MGRPC, echo1MGoCapnp},
		{fmt.Sprintf("round trip, 1 MiB (%d calls), Data", bigN), echo1MRaw, echo1MNetRPC, echo1MMPData, "", echo1MGRPCData, ""},
	} {
		row(append([]string{e.label, f.dur(e.raw), f.dur(e.netrpc), f.dur(e.mp), f.dur(e.capnp),
			f.ratio(e.netrpc, e.raw, nsOp).String(), f.ratio(e.mp, e.raw, nsOp).String(), f.ratio(e.capnp, e.raw, nsOp).String()},
			peerCells(e.grpc, e.gocapnp, e.mp, nsOp, dur)...)...)
	}
	row(append([]string{"makeEcho().echo(), pipelined, 8 B", dash, dash, f.dur(pipeMP), f.dur(pipeCapnp), dash,
		f.ratio(pipeMP, echo8Raw, nsOp).of("of raw 8 B"), f.ratio(pipeCapnp, echo8Raw, nsOp).of("of raw 8 B")},
		peerCells("", pipeGoCapnp, pipeMP, nsOp, dur)...)...)
	row(append([]string{"makeEcho(), then echo(), 8 B", dash, dash, f.dur(seqMP), f.dur(seqCapnp), dash,
		f.ratio(seqMP, echo8Raw, nsOp).of("of raw 8 B"), f.ratio(seqCapnp, echo8Raw, nsOp).of("of raw 8 B")},
		peerCells("", seqGoCapnp, seqMP, nsOp, dur)...)...)
	for _, c := range []struct{ label, mp, capnp, gocapnp string }{
		{"16 goroutines, 8 B calls, one capability each", concMPEach, concCapEach, concGoCapEach},
		{"16 goroutines, 8 B calls, one shared capability", concMPShared, concCapShared, concGoCapShared},
	} {
		row(append([]string{c.label, dash, f.rate(concNetRPC, callsS, "calls/s"), f.rate(c.mp, callsS, "calls/s"), f.rate(c.capnp, callsS, "calls/s"),
			dash, f.ratio(c.mp, concNetRPC, callsS).of("of net/rpc"), f.ratio(c.capnp, concNetRPC, callsS).of("of net/rpc")},
			peerCells(concGRPC, c.gocapnp, c.mp, callsS, rate(callsS, "calls/s"))...)...)
	}
	row(append([]string{fmt.Sprintf("streaming %d x 64 B, one way", streamN), f.rate(streamRaw, msgsS, "msgs/s"), f.rate(streamNetRPC, msgsS, "msgs/s"),
		f.rate(streamMP, msgsS, "msgs/s"), f.rate(streamCapnp, msgsS, "msgs/s"),
		f.ratio(streamNetRPC, streamRaw, msgsS).String(), f.ratio(streamMP, streamRaw, msgsS).String(), f.ratio(streamCapnp, streamRaw, msgsS).String()},
		peerCells(streamGRPC, streamGoCapnp, streamMP, msgsS, rate(msgsS, "msgs/s"))...)...)
	// A peer's spawn is shown with its ratio to the bare exec of its own
	// test binary, which is not package bench's.
	spawnFig := func(n string) string {
		d := f.dur(n)
		if r := f.ratio(n, spawnPeersExec, nsOp); r.ok {
			d += " (" + formatRatio(r.med) + " of its bare exec)"
		}
		return d
	}
	row(append([]string{"spawn to first completed call", f.dur(spawnExec) + " (bare exec)", dash, f.dur(spawnMP), f.dur(spawnCapnp), dash,
		f.ratio(spawnMP, spawnExec, nsOp).of("of bare exec"), f.ratio(spawnCapnp, spawnExec, nsOp).of("of bare exec")},
		peerCells(spawnGRPC, spawnGoCapnp, spawnMP, nsOp, spawnFig)...)...)

	pr("\n### Resources\n\n")
	resHead := []string{"", "raw socketpair", "net/rpc", "generated", "capnpc-go"}
	if peers {
		resHead = append(resHead, "gRPC", "go-capnp rpc")
	}
	resHead = append(resHead, "go-capnp floor (bench/floor)")
	row(resHead...)
	row(slices.Repeat([]string{"---"}, len(resHead))...)
	// line writes one row: cell applied to the four benchmarks of package
	// bench, then to the two peers' when the report has them, then floor.
	line := func(label string, cell func(name string) string, names [4]string, peerNames [2]string, floor string) {
		cells := []string{label}
		for _, n := range names {
			cells = append(cells, cell(n))
		}
		if peers {
			cells = append(cells, cell(peerNames[0]), cell(peerNames[1]))
		}
		row(append(cells, floor)...)
	}
	unit := func(u string) func(string) string {
		return func(n string) string {
			if n == "" {
				return dash
			}
			return f.num(n, u)
		}
	}
	pairOf := func(pu, cu, suffix string) func(string) string {
		return func(n string) string {
			if n == "" {
				return dash
			}
			return f.pair(n, pu, cu, suffix)
		}
	}
	cpuOf := func(n string) string {
		if n == "" {
			return dash
		}
		return f.pairScaled(n, parentCPU, childCPU, 1e-3)
	}
	echo8 := [4]string{echo8Raw, echo8NetRPC, echo8MP, echo8Capnp}
	echo8Peers := [2]string{echo8GRPC, echo8GoCapnp}
	echo1M := [4]string{echo1MRaw, echo1MNetRPC, echo1MMP, echo1MCapnp}
	echo1MPeers := [2]string{echo1MGRPC, echo1MGoCapnp}
	echo1MData := [4]string{"", "", echo1MMPData, ""}
	echo1MDataPeers := [2]string{echo1MGRPCData, ""}
	stream := [4]string{streamRaw, streamNetRPC, streamMP, streamCapnp}
	streamPeers := [2]string{streamGRPC, streamGoCapnp}
	line("allocations per 8 B call, parent / child", pairOf(parentAllocs, childAllocs, ""), echo8, echo8Peers,
		f.floorPair(floorCaller, floorServer, allocsOp, 1, "caller / server"))
	floorBytes := f.num(floorCaller, bytesOp)
	if floorBytes != dash {
		floorBytes += " (caller)"
	}
	line("bytes allocated per 8 B call, parent", unit(bytesOp), echo8, echo8Peers, floorBytes)
	line("CPU per 8 B call, parent / child (us)", cpuOf, echo8, echo8Peers,
		f.floorPair(floorCaller, floorServer, cpuOp, 1e-3, "caller / server"))
	line("goroutines started per 8 B call, parent / child", pairOf(parentGoNew, childGoNew, ""), echo8, echo8Peers, "")
	line("context switches per 8 B call, parent / child", pairOf(parentCtxsw, childCtxsw, ""), echo8, echo8Peers, "")
	line("CPU per 1 MiB call, Text, parent / child (us)", cpuOf, echo1M, echo1MPeers, "")
	line("CPU per 1 MiB call, Data, parent / child (us)", cpuOf, echo1MData, echo1MDataPeers, "")
	line(fmt.Sprintf("peak RSS over %d calls of 1 MiB, Text, parent / child", bigN), pairOf(parentPeak, childPeak, " MiB"), echo1M, echo1MPeers, "")
	line(fmt.Sprintf("peak RSS over %d calls of 1 MiB, Data, parent / child", bigN), pairOf(parentPeak, childPeak, " MiB"), echo1MData, echo1MDataPeers, "")
	line(fmt.Sprintf("streaming %d x 64 B: peak goroutines, parent / child", streamN), pairOf(parentGor, childGor, ""), stream, streamPeers, "")
	line("streaming: goroutines started per message, parent / child", pairOf(parentGoNew, childGoNew, ""), stream, streamPeers, "")
	line("streaming: CPU per message, parent / child (us)", cpuOf, stream, streamPeers,
		f.floorPair(floorStream, floorServerPush, cpuOp, 1e-3, "sender / server"))
	line("streaming: context switches per message, parent / child", pairOf(parentCtxsw, childCtxsw, ""), stream, streamPeers, "")
	line("streaming: allocations per message, parent / child", pairOf(parentAllocs, childAllocs, ""), stream, streamPeers,
		f.floorPair(floorStream, floorServerPush, allocsOp, 1, "sender / server"))
	line(fmt.Sprintf("streaming %d x 64 B: peak RSS, parent / child", streamN), pairOf(parentPeak, childPeak, " MiB"), stream, streamPeers, "")
	line("8 B calls one at a time: peak goroutines, parent / child", pairOf(parentGor, childGor, ""), echo8, echo8Peers, "")
	for _, c := range []struct{ label, mp, capnp, gocapnp string }{
		{"one capability each", concMPEach, concCapEach, concGoCapEach},
		{"one shared capability", concMPShared, concCapShared, concGoCapShared},
	} {
		names := [4]string{"", concNetRPC, c.mp, c.capnp}
		peerNames := [2]string{concGRPC, c.gocapnp}
		line("16 goroutines calling, "+c.label+": peak goroutines, parent / child", pairOf(parentGor, childGor, ""), names, peerNames, "")
		line("16 goroutines calling, "+c.label+": CPU per call, parent / child (us)", cpuOf, names, peerNames, "")
		line("16 goroutines calling, "+c.label+": context switches per call, parent / child", pairOf(parentCtxsw, childCtxsw, ""), names, peerNames, "")
		line("16 goroutines calling, "+c.label+": peak RSS, parent / child", pairOf(parentPeak, childPeak, " MiB"), names, peerNames, "")
	}

	pr("\n### Targets (generated path)\n\n")
	row("target", "generated", "", "capnpc-go, for comparison")
	row(slices.Repeat([]string{"---"}, 4)...)
	for _, t := range f.targets() {
		m := t.measured
		if m == "" {
			m = dash
		}
		if t.note != "" {
			m += " (" + t.note + ")"
		}
		c := t.capnp
		if c == "" {
			c = dash
		}
		row(t.what, m, t.verdict(), c)
	}

	pr("\n### go-capnp's floor (bench/floor: capnpc-go's code with no connection behind it)\n\n")
	row("per op", "wall", "CPU", "allocations", "bytes")
	row(slices.Repeat([]string{"---"}, 5)...)
	for _, fl := range []struct{ label, name string }{
		{"caller: generated `Echo` call, settled at once", floorCaller},
		{"caller: the Promise alone", floorPromise},
		{"server: one call delivered and waited for", floorServer},
		{"server: one streamed push delivered", floorServerPush},
		{"server: pushes queued faster than it takes them", floorServerQueued},
		{"sender of one streamed message", floorStream},
	} {
		row(fl.label, f.dur(fl.name), f.cpu(fl.name), f.num(fl.name, allocsOp), f.num(fl.name, bytesOp))
	}

	pr("\n### Every figure (medians)\n\n")
	units := []string{nsOp, bytesOp, allocsOp, parentAllocs, childAllocs, parentCPU, childCPU, cpuOp, parentGoNew, childGoNew,
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

// cpu formats a bench/floor benchmark's CPU per op.
func (f figures) cpu(name string) string {
	v, ok := f.median(name, cpuOp)
	if !ok {
		return dash
	}
	return formatDuration(v)
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
		echo8Raw, echo8NetRPC, echo8MP, echo8Capnp, echo4Raw, echo4NetRPC, echo4MP, echo4Capnp,
		echo1MRaw, echo1MNetRPC, echo1MMP, echo1MMPData, echo1MCapnp,
		concNetRPC, concMPEach, concMPShared, concCapEach, concCapShared,
		pipeMP, seqMP, pipeCapnp, seqCapnp, streamRaw, streamNetRPC, streamMP, streamCapnp,
		spawnExec, spawnMP, spawnCapnp,
		echo8GRPC, echo8GoCapnp, echo4GRPC, echo4GoCapnp, echo1MGRPC, echo1MGRPCData, echo1MGoCapnp,
		concGRPC, concGoCapEach, concGoCapShared, pipeGoCapnp, seqGoCapnp, streamGRPC, streamGoCapnp,
		spawnPeersExec, spawnGRPC, spawnGoCapnp,
		floorCaller, floorPromise, floorServer, floorServerPush, floorServerQueued, floorStream,
	} {
		m[n] = i
	}
	return m
}
