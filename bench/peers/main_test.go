package peers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/process"
)

// The test binary doubles as every child process of the benchmarks: a
// parent starts it with envChild naming one of the kinds below, and
// TestMain then runs that child instead of the tests.
const envChild = "MULTIPROCESS_BENCH_PEER_CHILD"

// Kinds of child, which are also the benchmarks' sub-benchmark names.
// They differ from package bench's, so that bench/report can keep the
// results of both packages in one table by name.
const (
	kindExit    = "peersexec" // exits 0 at once: the bare exec of BenchmarkSpawn
	kindGRPC    = "grpc"      // gRPC on a unix socket, go-plugin's way (grpc_test.go)
	kindGoCapnp = "gocapnp"   // go-capnp's rpc on the socket (gocapnp_test.go)
)

// implGRPCData is gRPC's EchoData, beside its Echo (kindGRPC).
const implGRPCData = "grpcdata"

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
	run, ok := map[string]func() int{
		kindGRPC:    grpcChildMain,
		kindGoCapnp: gocapnpChildMain,
	}[kind]
	if !ok {
		fmt.Fprintf(os.Stderr, "peers child: unknown kind %q\n", kind)
		return 90
	}
	return probe.RunChild(kind, run)
}

// childEnv is this process's environment with the child's kind.
func childEnv(kind string) []string { return append(os.Environ(), envChild+"="+kind) }

// self returns the test binary's path, which every child runs.
func self(tb testing.TB) string {
	tb.Helper()
	path, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

// spawnedConn is how the socketpair children take their socket: as a
// spawned executable of the framework would, with process.CheckSpawned.
func spawnedConn() (net.Conn, error) {
	fd, spawned, err := process.CheckSpawned(os.Args)
	if err != nil {
		return nil, err
	}
	if !spawned {
		return nil, errors.New("started without -ipcfd")
	}
	return process.SocketConn(fd)
}

// warnLogger logs warnings and errors to stderr, so that a benchmark
// whose connection misbehaves says so, and stays quiet otherwise: it
// drops what go-capnp logs as errors when a connection ends normally (the
// peer's Close, which it logs as a remote abort; the releases still
// queued when this side closes), which would otherwise fill the output of
// every run.
func warnLogger(name string) (log *slog.Logger, closing *atomic.Bool) {
	closing = new(atomic.Bool)
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(closeFilter{h, closing}).With("process", name, "pid", os.Getpid()), closing
}

// peerClosed is the record go-capnp's rpc.Conn logs, as an error, when
// the peer closes the connection with rpc.Conn.Close.
const peerClosed = "rpc: remote abort: connection closed"

// closeFilter drops the records of an ordinary close: all of them once
// closing is set, and peerClosed.
type closeFilter struct {
	slog.Handler
	closing *atomic.Bool
}

func (h closeFilter) Handle(ctx context.Context, r slog.Record) error {
	if h.closing.Load() || r.Message == peerClosed {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h closeFilter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return closeFilter{h.Handler.WithAttrs(attrs), h.closing}
}

func (h closeFilter) WithGroup(name string) slog.Handler {
	return closeFilter{h.Handler.WithGroup(name), h.closing}
}

// payload returns n bytes of the payload package bench sends: the bytes
// that follow its raw frame's 5-byte header.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + (i+5)%26)
	}
	return p
}

// checkReply checks an echo's reply by its length and last byte.
func checkReply[G, S string | []byte](got G, sent S) error {
	if len(got) != len(sent) || (len(got) > 0 && got[len(got)-1] != sent[len(sent)-1]) {
		return fmt.Errorf("echo: got %d bytes back, sent %d", len(got), len(sent))
	}
	return nil
}

// bareExec runs the test binary as a child that exits at the top of
// main, and waits for it.
func bareExec(path string) error {
	cmd := exec.Command(path)
	cmd.Env, cmd.Stdout, cmd.Stderr = childEnv(kindExit), os.Stdout, os.Stderr
	return cmd.Run()
}
