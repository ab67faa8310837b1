package mp_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/mp"
)

// turnBlob's EchoText keeps its context when asked, blocks when asked,
// and records how many of its calls ran at once.
type turnBlob struct {
	blob
	kept             chan context.Context
	entered, release chan struct{}
	running, most    atomic.Int32
}

func (b *turnBlob) EchoText(ctx context.Context, s string) (string, error) {
	n := b.running.Add(1)
	defer b.running.Add(-1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	switch s {
	case "keep":
		b.kept <- ctx
	case "block":
		close(b.entered)
		<-b.release
	}
	return s, nil
}

// A call served inline leaves its ServerCall for the next call on the
// object, and the context its method kept no longer names a call: an
// outgoing call made with it later does not give away the turn of the
// call that reuses the ServerCall, so the calls queued behind that one
// still wait (the ordering rule).
func TestReusedServerCallDisownsKeptContext(t *testing.T) {
	ctx := testCtx(t)
	impl := &turnBlob{kept: make(chan context.Context, 1), entered: make(chan struct{}), release: make(chan struct{})}
	p := newBlobPair(t, impl, nil)
	other := newBlobPair(t, &blob{}, nil)
	if _, err := p.EchoText(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	kept := <-impl.kept
	done := make(chan error, 2)
	go func() { _, err := p.EchoText(ctx, "block"); done <- err }()
	<-impl.entered
	go func() { _, err := p.EchoText(ctx, "queued"); done <- err }()
	time.Sleep(20 * time.Millisecond) // the third call queues behind the second
	// An outgoing call with the kept context (whatever it returns: the
	// call it belonged to is over).
	_, _ = other.Sum(kept)
	time.Sleep(20 * time.Millisecond)
	if n := impl.most.Load(); n != 1 {
		t.Errorf("%d calls on the object ran at once after an outgoing call with a kept context, want 1", n)
	}
	close(impl.release)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := impl.most.Load(); n != 1 {
		t.Errorf("%d calls on the object ran at once, want 1", n)
	}
}

// Streamed calls served inline allocate no ServerCall each: one is
// reused (BenchmarkStreamPush: 847 -> 460 bytes per call, both ends).
func TestInlineCallsReuseServerCall(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation figures under the race detector differ")
	}
	ctx := testCtx(t)
	p := newBlobPair(t, &blob{}, nil)
	payload := make([]byte, 64)
	for range 1000 {
		if err := p.PushData(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, p); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if err := p.PushData(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, p); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	perCall := float64(after.TotalAlloc-before.TotalAlloc) / n
	t.Logf("%.0f bytes allocated per streamed call, both ends", perCall)
	if perCall > 650 {
		t.Errorf("%.0f bytes allocated per streamed call, want at most 650 (a ServerCall is 400)", perCall)
	}
}
