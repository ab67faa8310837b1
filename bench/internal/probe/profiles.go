package probe

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// With these set to a directory, a child writes its own profiles there
// when it exits, named <kind>-<pid>.cpu.prof and <kind>-<pid>.allocs.prof
// (the latter with every allocation sampled, which slows the child), and
// its execution trace, <kind>-<pid>.trace: the -cpuprofile, -memprofile
// and -trace of go test cover only the parent. Both processes' traces
// are timed by the same monotonic clock, so their goroutines can be
// lined up (go tool trace -d=parsed).
const (
	EnvChildCPUProfile = "MULTIPROCESS_BENCH_CHILD_CPUPROFILE"
	EnvChildMemProfile = "MULTIPROCESS_BENCH_CHILD_MEMPROFILE"
	EnvChildTrace      = "MULTIPROCESS_BENCH_CHILD_TRACE"
)

// RunChild runs a child's main: it starts the profiles that the
// environment asks for and the sampling of Goroutines, runs main, stops
// them and returns main's exit code, or 91 or 92 when a profile could not
// be started or written (codes 90 and up are the harnesses' own).
func RunChild(kind string, main func() int) int {
	stopProfiles, err := startProfiles(kind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 91
	}
	stopSampler := Goroutines.Start()
	code := main()
	stopSampler()
	if err := stopProfiles(); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 92
	}
	return code
}

func startProfiles(kind string) (stop func() error, err error) {
	cpuDir, memDir, traceDir := os.Getenv(EnvChildCPUProfile), os.Getenv(EnvChildMemProfile), os.Getenv(EnvChildTrace)
	name := func(dir, what string) string {
		return fmt.Sprintf("%s/%s-%d.%s.prof", dir, kind, os.Getpid(), what)
	}
	var tr *os.File
	if traceDir != "" {
		if tr, err = os.Create(fmt.Sprintf("%s/%s-%d.trace", traceDir, kind, os.Getpid())); err != nil {
			return nil, err
		}
		if err := trace.Start(tr); err != nil {
			tr.Close()
			return nil, err
		}
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
		if tr != nil {
			trace.Stop()
			if err := tr.Close(); err != nil {
				return err
			}
		}
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
