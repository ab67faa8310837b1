package bench

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
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
	return probe.RunChild(kind, run)
}

// children maps each kind to the child's main.
var children = map[string]func() int{
	kindRaw:    rawChildMain,
	kindNetRPC: netrpcChildMain,
	kindMP:     mpChildMain,
	kindCapnp:  capnpChildMain,
}
