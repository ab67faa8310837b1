package probe

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

// Probe surrounds the timed loop of a benchmark with the measurements
// that -benchmem does not make, for both processes: allocations (exact,
// where -benchmem's allocs/op is rounded down), goroutines started,
// context switches and CPU time per operation, the most goroutines alive
// at once and the peak RSS (VmHWM).
type Probe struct {
	b            *testing.B
	stats        func() (Stats, error)
	before       Stats
	parentBefore Stats
	parent       GoroutinePeak
	stopSampler  func()
}

// Start resets the parent's peak RSS, asks the child for its stats and
// (re)starts the benchmark timer. stats is the child's stats call; the
// child is fresh for each run of a benchmark function, so its peaks are
// this run's.
func Start(b *testing.B, stats func() (Stats, error)) *Probe {
	b.Helper()
	p := &Probe{b: b, stats: stats}
	ResetOwnPeakRSS(b)
	var err error
	if p.before, err = stats(); err != nil {
		b.Fatal("child stats:", err)
	}
	p.stopSampler = p.parent.Start()
	p.parentBefore.Mallocs = mallocs()
	p.parentBefore.GoroutinesCreated, p.parentBefore.ContextSwitches, p.parentBefore.CPUNs = counters()
	b.ResetTimer()
	return p
}

// Stop stops the timer and reports the metrics, and rate, if not empty,
// as b.N per second in that unit ("calls/s", "msgs/s").
func (p *Probe) Stop(rate string) {
	b := p.b
	b.Helper()
	b.StopTimer()
	elapsed := b.Elapsed()
	var parent Stats
	parent.Mallocs = mallocs()
	parent.GoroutinesCreated, parent.ContextSwitches, parent.CPUNs = counters()
	p.stopSampler()
	p.parent.Sample()
	after, err := p.stats()
	if err != nil {
		b.Fatal("child stats:", err)
	}
	n := float64(b.N)
	if rate != "" && elapsed > 0 {
		b.ReportMetric(n/elapsed.Seconds(), rate)
	}
	// The child's deltas include one stats call, which is noise once
	// b.N is more than a few hundred.
	b.ReportMetric(float64(parent.Mallocs-p.parentBefore.Mallocs)/n, "parent-allocs/op")
	b.ReportMetric(float64(after.Mallocs-p.before.Mallocs)/n, "child-allocs/op")
	b.ReportMetric(float64(parent.GoroutinesCreated-p.parentBefore.GoroutinesCreated)/n, "parent-gocreated/op")
	b.ReportMetric(float64(after.GoroutinesCreated-p.before.GoroutinesCreated)/n, "child-gocreated/op")
	b.ReportMetric(float64(parent.ContextSwitches-p.parentBefore.ContextSwitches)/n, "parent-ctxsw/op")
	b.ReportMetric(float64(after.ContextSwitches-p.before.ContextSwitches)/n, "child-ctxsw/op")
	b.ReportMetric(float64(parent.CPUNs-p.parentBefore.CPUNs)/n, "parent-cpu-ns/op")
	b.ReportMetric(float64(after.CPUNs-p.before.CPUNs)/n, "child-cpu-ns/op")
	if own, err := PeakRSSKiB(os.Getpid()); err == nil {
		b.ReportMetric(mib(own), "parent-peak-MiB")
	}
	b.ReportMetric(mib(after.PeakRSSKiB), "child-peak-MiB")
	b.ReportMetric(float64(p.parent.Peak()), "parent-goroutines")
	b.ReportMetric(float64(after.PeakGoroutines), "child-goroutines")
}

// ResetOwnPeakRSS returns garbage to the operating system and resets this
// process's VmHWM to its current RSS, so that the peak measured next
// belongs to the benchmark that follows and not to an earlier one.
func ResetOwnPeakRSS(tb testing.TB) {
	tb.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	// "5" resets the peak RSS (Linux 4.0 and later; proc(5)).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Logf("cannot reset peak RSS, parent-peak-MiB includes earlier benchmarks: %v", err)
	}
}
