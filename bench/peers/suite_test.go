package peers

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/bench/peers/internal/peerpb"
)

// These tests check that the benchmarks measure what they claim: the
// payload crosses to a real child process and comes back, every streamed
// message arrives, the stats come from the child, and each child exits 0.
// None of them asserts a speed.

var echoSizes = []int{1, 8, 4 << 10, 1 << 20}

func TestGRPCChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p, err := startGRPC(self(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for _, size := range echoSizes {
		data := payload(size)
		if err := p.echo(ctx, string(data)); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
		if err := p.echoData(ctx, data); err != nil {
			t.Fatalf("echoData of %d bytes: %v", size, err)
		}
	}
	out, err := p.client.Echo(ctx, &peerpb.Text{Text: "crossed"})
	if err != nil || out.GetText() != "crossed" {
		t.Fatalf("echo = %q, %v", out.GetText(), err)
	}
	if err := concurrently(200, func(int) error { return p.echo(ctx, "concurrent") }); err != nil {
		t.Fatal(err)
	}
	count, bytes, err := p.push(ctx, 1000, payload(streamPayload))
	checkStream(t, 1000, count, bytes, err)
	s, err := p.stats(ctx)
	checkStats(t, s, err)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

// TestGRPCChildLifeline checks that a gRPC child whose parent goes away
// without Shutdown (its stdin closes) stops serving and exits 0.
func TestGRPCChildLifeline(t *testing.T) {
	p, err := startGRPC(self(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	if err := p.echo(t.Context(), "before"); err != nil {
		t.Fatal(err)
	}
	p.stdin.Close()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("the child did not exit 0 when its stdin closed: %v", err)
	}
	p.cmd = exec.Command("true") // nothing left for kill to reap
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

func TestGoCapnpChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p, err := startGoCapnp(ctx, self(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	e, err := p.makeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release()
	for _, size := range echoSizes {
		if err := gocapnpEchoCall(ctx, e, string(payload(size))); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
	}
	if err := concurrently(200, func(int) error { return gocapnpEchoCall(ctx, e, "concurrent") }); err != nil {
		t.Fatal(err)
	}
	if err := firstGoCapnpCall(ctx, p); err != nil {
		t.Fatal("pipelined:", err)
	}
	// The reference program's other Init methods are not served.
	hello, release := p.init.Hello(ctx, nil)
	_, err = hello.Struct()
	release()
	if err == nil || !strings.Contains(err.Error(), errNotServed.Error()) {
		t.Fatalf("hello: %v; want %v", err, errNotServed)
	}

	s, err := p.makeSink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	data := payload(streamPayload)
	for range 1000 {
		if err := s.Push(ctx, func(p benchschema.Sink_push_Params) error { return p.SetData(data) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitStreaming(); err != nil {
		t.Fatal(err)
	}
	count, bytes, err := gocapnpSinkDone(ctx, s)
	checkStream(t, 1000, count, bytes, err)
	st, err := p.stats(ctx)
	checkStats(t, st, err)
	s.Release()
	e.Release()
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

func TestBareExecExits(t *testing.T) {
	cmd := exec.Command(self(t), "-test.run=^$")
	cmd.Env = childEnv(kindExit)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("bare exec: %v, output %q", err, out)
	}
}

func TestPayloadIsPackageBenchs(t *testing.T) {
	// bench's newFrame(opEcho, 8)[rawHeader:]
	if got := string(payload(8)); got != "fghijklm" {
		t.Errorf("payload(8) = %q", got)
	}
}

func checkStream(t *testing.T, want, count, bytes uint64, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if count != want || bytes != want*streamPayload {
		t.Fatalf("the child counted %d messages and %d bytes; want %d and %d", count, bytes, want, want*streamPayload)
	}
}

func checkStats(t *testing.T, s probe.Stats, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if s.PID <= 0 || s.PID == os.Getpid() {
		t.Errorf("stats come from pid %d; this is %d", s.PID, os.Getpid())
	}
	if s.Goroutines < 1 || s.PeakGoroutines < s.Goroutines || s.Mallocs == 0 || s.PeakRSSKiB == 0 {
		t.Errorf("implausible stats %+v", s)
	}
}
