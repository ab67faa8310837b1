package bench

import (
	"context"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	"github.com/gomultiprocess/multiprocess/bench/internal/mpbench"
	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/mp"
)

// These tests check that the benchmarks measure what they claim: the
// payload crosses to a real child process and comes back, every streamed
// message arrives, the stats come from the child, and each child exits 0.
// None of them asserts a speed.

var echoSizes = []int{1, 8, 4 << 10, 1 << 20}

func TestRawChild(t *testing.T) {
	p := startRaw(t)
	for _, size := range echoSizes {
		if err := p.echo(newFrame(opEcho, size)); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
	}
	frame := newFrame(opSink, streamPayload)
	for range 1000 {
		if err := p.push(frame); err != nil {
			t.Fatal(err)
		}
	}
	count, bytes, err := p.done()
	checkStream(t, 1000, count, bytes, err)
	s, err := p.stats()
	checkStats(t, s, err)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

func TestNetRPCChild(t *testing.T) {
	p := startNetRPC(t)
	for _, size := range echoSizes {
		if err := p.echo(newFrame(opEcho, size)[rawHeader:]); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
	}
	if err := concurrently(200, func(int) error { return p.echo([]byte("concurrent")) }); err != nil {
		t.Fatal(err)
	}
	done := make(chan *rpc.Call, 1000)
	var empty struct{}
	payload := newFrame(opSink, streamPayload)[rawHeader:]
	for range 1000 {
		p.client.Go("NetRPC.Push", payload, &empty, done)
	}
	for range 1000 {
		if c := <-done; c.Error != nil {
			t.Fatal(c.Error)
		}
	}
	count, bytes, err := p.done()
	checkStream(t, 1000, count, bytes, err)
	s, err := p.stats()
	checkStats(t, s, err)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

func TestMPChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p := startMP(t)
	e, err := p.init.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	for _, size := range echoSizes {
		payload := newFrame(opEcho, size)[rawHeader:]
		if err := mpEchoText(ctx, e, string(payload)); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
		if err := mpEchoData(ctx, e, payload); err != nil {
			t.Fatalf("echoData of %d bytes: %v", size, err)
		}
	}
	// The echo really crosses: the reply is the payload, not just as long.
	if got, err := e.Echo(ctx, "crossed"); err != nil || got != "crossed" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if err := concurrently(200, func(int) error { return mpEchoText(ctx, e, "concurrent") }); err != nil {
		t.Fatal(err)
	}
	piped := p.init.MakeEchoPipelined(ctx)
	err = mpEchoText(ctx, piped, "pipelined")
	mp.Release(piped)
	if err != nil {
		t.Fatal("pipelined:", err)
	}

	s, err := p.init.MakeSink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(s)
	payload := newFrame(opSink, streamPayload)[rawHeader:]
	for range 1000 {
		if err := s.Push(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, s); err != nil {
		t.Fatal(err)
	}
	done, err := s.Done(ctx)
	checkStream(t, 1000, done.Count, done.Bytes, err)

	st, err := p.stats(ctx)
	checkStats(t, st, err)
}

func TestCapnpChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p := startCapnp(t)
	e, err := p.makeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release()
	for _, size := range echoSizes {
		if err := capnpEchoCall(ctx, e, string(newFrame(opEcho, size)[rawHeader:])); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
	}
	if err := concurrently(200, func(int) error { return capnpEchoCall(ctx, e, "concurrent") }); err != nil {
		t.Fatal(err)
	}
	made, release := p.init.MakeEcho(ctx, nil)
	err = capnpEchoCall(ctx, made.Result(), "pipelined")
	release()
	if err != nil {
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
	payload := newFrame(opSink, streamPayload)[rawHeader:]
	for range 1000 {
		err := s.Push(ctx, func(p benchschema.Sink_push_Params) error { return p.SetData(payload) })
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitStreaming(); err != nil {
		t.Fatal(err)
	}
	count, bytes, err := capnpSinkDone(ctx, s)
	checkStream(t, 1000, count, bytes, err)

	st, err := p.stats(ctx)
	checkStats(t, st, err)
}

// TestConcurrentPerCaller checks that the callers of
// BenchmarkConcurrent16's "percaller" runs each call a capability of
// their own: makeEcho returns a new one each time on both paths.
func TestConcurrentPerCaller(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p := startMP(t)
	a, err := p.init.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(a)
	b, err := p.init.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(b)
	if a.(*mpbench.EchoClient).MPClient().Capnp().IsSame(b.(*mpbench.EchoClient).MPClient().Capnp()) {
		t.Error("two makeEcho calls returned the same capability")
	}
}

func TestEchoRefusesWrongReply(t *testing.T) {
	p := startRaw(t)
	// An 8-byte echo whose reply is left unread, so that the next echo
	// reads it instead of its own.
	if err := p.push(newFrame(opEcho, 8)); err != nil {
		t.Fatal(err)
	}
	if err := p.echo(newFrame(opEcho, 16)); err == nil {
		t.Fatal("echo accepted a reply of the wrong length")
	}
	// Take the 16-byte reply too, so that the child exits cleanly.
	var err error
	if p.buf, err = readFrame(p.r, p.buf); err != nil || len(p.buf) != rawHeader+16 {
		t.Fatalf("second reply: %d bytes, %v", len(p.buf), err)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

func TestBareExecExits(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+kindExit)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("bare exec: %v, output %q", err, out)
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
