package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary doubles as every child process of the benchmarks: a
// parent starts it with envChild naming one of the kinds below, and
// TestMain then runs that child instead of the tests (the helper-process
// pattern of os/exec's exec_test.go).
const envChild = "MULTIPROCESS_BENCH_CHILD"

// Kinds of child.
const (
	kindExit   = "exit"   // exits 0 at once: the bare exec of BenchmarkSpawn
	kindRaw    = "raw"    // length-prefixed frames over the socket (raw_test.go)
	kindNetRPC = "netrpc" // net/rpc over the socket (netrpc_test.go)
	kindMP     = "mp"     // the generated path: ipc.StartSpawnedProcess, as a real executable (mp_test.go)
	kindCapnp  = "capnp"  // the capnpc-go path: protocol.Serve on the socket (capnp_test.go)
)

// With these set to a directory, a child writes its own profiles there
// when it exits, named <kind>-<pid>.cpu.prof and <kind>-<pid>.allocs.prof
// (the latter with every allocation sampled, which slows the child): the
// -cpuprofile and -memprofile of go test cover only the parent.
const (
	envChildCPUProfile = "MULTIPROCESS_BENCH_CHILD_CPUPROFILE"
	envChildMemProfile = "MULTIPROCESS_BENCH_CHILD_MEMPROFILE"
)

// patience turns a hang into a failure; nothing here asserts speed.
const patience = 2 * time.Minute

func TestMain(m *testing.M) {
	kind := os.Getenv(envChild)
	if kind == kindExit { // the top of main, before anything else runs
		os.Exit(0)
	}
	if kind != "" {
		os.Exit(childMain(kind))
	}
	goleak.VerifyTestMain(m)
}

// childMain runs the child of the given kind and returns its exit code.
// Codes 90 and up are the harness's own failures.
func childMain(kind string) int {
	run, ok := children[kind]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench child: unknown kind %q\n", kind)
		return 90
	}
	stopProfiles, err := startChildProfiles(kind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 91
	}
	stopSampler := childGoroutines.start()
	code := run()
	stopSampler()
	if err := stopProfiles(); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 92
	}
	return code
}

// children maps each kind to the child's main.
var children = map[string]func() int{
	kindRaw:    rawChildMain,
	kindNetRPC: netrpcChildMain,
	kindMP:     mpChildMain,
	kindCapnp:  capnpChildMain,
}

func startChildProfiles(kind string) (stop func() error, err error) {
	cpuDir, memDir := os.Getenv(envChildCPUProfile), os.Getenv(envChildMemProfile)
	name := func(dir, what string) string {
		return fmt.Sprintf("%s/%s-%d.%s.prof", dir, kind, os.Getpid(), what)
	}
	var cpu *os.File
	if cpuDir != "" {
		if cpu, err = os.Create(name(cpuDir, "cpu")); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, err
		}
	}
	if memDir != "" {
		runtime.MemProfileRate = 1
	}
	return func() error {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return err
			}
		}
		if memDir != "" {
			f, err := os.Create(name(memDir, "allocs"))
			if err != nil {
				return err
			}
			runtime.GC()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}
		return nil
	}, nil
}

// childStats is what a process reports about itself, the same for every
// kind of child. The counters are totals since the process started;
// probe turns them into per-call figures.
type childStats struct {
	PID               int
	Goroutines        int    // now
	PeakGoroutines    int    // the most seen since the process started
	Mallocs           uint64 // heap objects allocated
	PeakRSSKiB        uint64 // VmHWM
	GoroutinesCreated uint64
	ContextSwitches   uint64 // voluntary and involuntary
	CPUNs             uint64 // user and system
}

// fields and statsFromFields list childStats as numbers, for the
// baselines' wire formats.
func (s childStats) fields() []uint64 {
	return []uint64{uint64(s.PID), uint64(s.Goroutines), uint64(s.PeakGoroutines), s.Mallocs, s.PeakRSSKiB,
		s.GoroutinesCreated, s.ContextSwitches, s.CPUNs}
}

const statsFields = 8

func statsFromFields(v []uint64) childStats {
	return childStats{
		PID:               int(v[0]),
		Goroutines:        int(v[1]),
		PeakGoroutines:    int(v[2]),
		Mallocs:           v[3],
		PeakRSSKiB:        v[4],
		GoroutinesCreated: v[5],
		ContextSwitches:   v[6],
		CPUNs:             v[7],
	}
}

// ownStats returns this process's stats.
func ownStats() childStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	childGoroutines.sample()
	hwm, _ := peakRSSKiB(os.Getpid())
	s := childStats{
		PID:            os.Getpid(),
		Goroutines:     runtime.NumGoroutine(),
		PeakGoroutines: int(childGoroutines.peak.Load()),
		Mallocs:        ms.Mallocs,
		PeakRSSKiB:     hwm,
	}
	s.GoroutinesCreated, s.ContextSwitches, s.CPUNs = processCounters()
	return s
}

// processCounters returns the goroutines started, the context switches
// and the CPU time of this process so far.
func processCounters() (goroutinesCreated, contextSwitches, cpuNs uint64) {
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

// goroutinePeak tracks the most goroutines seen: sampled every few
// milliseconds by a goroutine of its own, and on the hot paths that
// matter (each streamed message) by sample.
type goroutinePeak struct{ peak atomic.Int64 }

// childGoroutines is the child process's own tracker.
var childGoroutines goroutinePeak

func (g *goroutinePeak) sample() {
	n := int64(runtime.NumGoroutine())
	for {
		old := g.peak.Load()
		if n <= old || g.peak.CompareAndSwap(old, n) {
			return
		}
	}
}

// start samples every 5 ms until the returned function is called.
func (g *goroutinePeak) start() (stop func()) {
	g.sample()
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
				g.sample()
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

// peakRSSKiB returns VmHWM, the peak resident set size, of a process.
func peakRSSKiB(pid int) (uint64, error) {
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

// resetOwnPeakRSS returns garbage to the operating system and resets this
// process's VmHWM to its current RSS, so that the peak measured next
// belongs to the benchmark that follows and not to an earlier one.
func resetOwnPeakRSS(tb testing.TB) {
	tb.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	// "5" resets the peak RSS (Linux 4.0 and later; proc(5)).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Logf("cannot reset peak RSS, parent-peak-MiB includes earlier benchmarks: %v", err)
	}
}

func mib(kib uint64) float64 { return float64(kib) / 1024 }
