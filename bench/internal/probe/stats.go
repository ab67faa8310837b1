package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Stats is what a process reports about itself, the same for every kind
// of child. The counters are totals since the process started; Probe
// turns them into per-operation figures.
type Stats struct {
	PID               int
	Goroutines        int    // now
	PeakGoroutines    int    // the most seen by Goroutines since the process started
	Mallocs           uint64 // heap objects allocated
	PeakRSSKiB        uint64 // VmHWM
	GoroutinesCreated uint64
	ContextSwitches   uint64 // voluntary and involuntary
	CPUNs             uint64 // user and system
}

// NumFields is the length of Stats.Fields.
const NumFields = 8

// Fields lists s as numbers, for wire formats that carry a list of
// integers; FromFields reverses it.
func (s Stats) Fields() []uint64 {
	return []uint64{uint64(s.PID), uint64(s.Goroutines), uint64(s.PeakGoroutines), s.Mallocs, s.PeakRSSKiB,
		s.GoroutinesCreated, s.ContextSwitches, s.CPUNs}
}

// FromFields returns the Stats that Fields listed as v; it fails unless v
// has NumFields numbers.
func FromFields(v []uint64) (Stats, error) {
	if len(v) != NumFields {
		return Stats{}, fmt.Errorf("stats: %d fields, want %d", len(v), NumFields)
	}
	return Stats{
		PID:               int(v[0]),
		Goroutines:        int(v[1]),
		PeakGoroutines:    int(v[2]),
		Mallocs:           v[3],
		PeakRSSKiB:        v[4],
		GoroutinesCreated: v[5],
		ContextSwitches:   v[6],
		CPUNs:             v[7],
	}, nil
}

// Own returns this process's stats; its peak goroutines are those that
// Goroutines has seen.
func Own() Stats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	Goroutines.Sample()
	hwm, _ := PeakRSSKiB(os.Getpid())
	s := Stats{
		PID:            os.Getpid(),
		Goroutines:     runtime.NumGoroutine(),
		PeakGoroutines: Goroutines.Peak(),
		Mallocs:        ms.Mallocs,
		PeakRSSKiB:     hwm,
	}
	s.GoroutinesCreated, s.ContextSwitches, s.CPUNs = counters()
	return s
}

// counters returns the goroutines started, the context switches and the
// CPU time of this process so far.
func counters() (goroutinesCreated, contextSwitches, cpuNs uint64) {
	sample := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		goroutinesCreated = sample[0].Value.Uint64()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		contextSwitches = uint64(ru.Nvcsw + ru.Nivcsw)
		cpuNs = uint64(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return goroutinesCreated, contextSwitches, cpuNs
}

// mallocs returns the heap objects this process has allocated so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// GoroutinePeak tracks the most goroutines seen: sampled every few
// milliseconds by a goroutine of its own while started, and on the hot
// paths that matter (each streamed message) by Sample.
type GoroutinePeak struct{ peak atomic.Int64 }

// Goroutines is this process's own tracker, which Own reports: a child
// starts it in its main and samples it on each streamed message.
var Goroutines GoroutinePeak

// Sample records the goroutines alive now.
func (g *GoroutinePeak) Sample() {
	n := int64(runtime.NumGoroutine())
	for {
		old := g.peak.Load()
		if n <= old || g.peak.CompareAndSwap(old, n) {
			return
		}
	}
}

// Peak returns the most goroutines sampled so far.
func (g *GoroutinePeak) Peak() int { return int(g.peak.Load()) }

// Start samples every 5 ms until the returned function is called.
func (g *GoroutinePeak) Start() (stop func()) {
	g.Sample()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				g.Sample()
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		wg.Wait()
	}
}

// PeakRSSKiB returns VmHWM, the peak resident set size, of a process.
func PeakRSSKiB(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:")); ok {
			f := bytes.Fields(rest)
			if len(f) != 2 || string(f[1]) != "kB" {
				break
			}
			return strconv.ParseUint(string(f[0]), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func mib(kib uint64) float64 { return float64(kib) / 1024 }
