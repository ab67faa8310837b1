package rpcconn

import (
	"context"
	"errors"
	"testing"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// TestCtxWatch: calls under one context share a watch, which cancels
// all of them when the context ends; calls under many contexts keep at
// most maxWatches watches; the end of the connection stops them.
func TestCtxWatch(t *testing.T) {
	ts := newTestServer()
	client, _ := newPair(t, true, true, ts.client())
	c := client.(ourPeer).c
	boot := client.bootstrap(context.Background())
	defer boot.Release()
	watches := func() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.watches) }

	// Three calls in flight under one context, then the context ends.
	ctx, cancel := context.WithCancel(context.Background())
	var futs []testschema.Slow_sleep_Results_Future
	for range 3 {
		f, rel := testschema.Slow(boot).Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
			p.SetMs(60_000)
			return nil
		})
		defer rel()
		futs = append(futs, f)
	}
	waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 3 })
	c.mu.Lock()
	if len(c.watches) != 1 || len(c.watches[0].qs) != 3 {
		t.Errorf("watches %d, the first with %d questions; want 1 with 3", len(c.watches), len(c.watches[0].qs))
	}
	c.mu.Unlock()
	cancel()
	for _, f := range futs {
		if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
	}
	waitFor(t, func() bool { return watches() == 0 })
	waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.canceled == 3 })

	// Many contexts, one after another, each still open: bounded.
	var cancels []context.CancelFunc
	defer func() {
		for _, f := range cancels {
			f()
		}
	}()
	for i := range 3 * maxWatches {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		if _, err := echo(ctx, schema.Echo(boot), "x"); err != nil {
			t.Fatal(err)
		}
		if n := watches(); n > maxWatches {
			t.Fatalf("after %d contexts: %d watches", i+1, n)
		}
	}
	// The same context again: its watch is reused.
	ctx2 := context.WithValue(context.Background(), ownerKey{}, 1)
	ctx3, cancel3 := context.WithCancel(ctx2)
	defer cancel3()
	for range 5 {
		if _, err := echo(ctx3, schema.Echo(boot), "x"); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	c.mu.Lock()
	for _, w := range c.watches {
		if w.ctx == ctx3 {
			n++
		}
	}
	c.mu.Unlock()
	if n != 1 {
		t.Errorf("%d watches for one context, want 1", n)
	}
	// A context made for one call and canceled after it: nothing watches
	// it any more, so its cancellation starts no goroutine.
	before := goroutinesCreated()
	for range 100 {
		cctx, ccancel := context.WithCancel(context.Background())
		if _, err := echo(cctx, schema.Echo(boot), "x"); err != nil {
			t.Fatal(err)
		}
		ccancel()
	}
	if n := goroutinesCreated() - before; n > 10 {
		t.Errorf("%d goroutines started for 100 calls under contexts of their own", n)
	}
	// A context that calls come back with is watched between calls.
	registered := func(ctx context.Context) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.watches {
			if w.ctx == ctx {
				return w.registered
			}
		}
		return false
	}
	ctx4, cancel4 := context.WithCancel(context.Background())
	defer cancel4()
	if _, err := echo(ctx4, schema.Echo(boot), "x"); err != nil {
		t.Fatal(err)
	}
	if registered(ctx4) {
		t.Error("a context used once is still watched")
	}
	if _, err := echo(ctx4, schema.Echo(boot), "x"); err != nil {
		t.Fatal(err)
	}
	if !registered(ctx4) {
		t.Error("a context used twice is not watched")
	}
	// A context of a non-pointer type is not cached, and still works.
	vctx, vcancel := context.WithCancel(context.Background())
	defer vcancel()
	if _, err := echo(valueCtx{vctx}, schema.Echo(boot), "x"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-c.Done()
	if n := watches(); n != 0 {
		t.Errorf("%d watches after the end", n)
	}
}

// valueCtx is a context whose dynamic type is not a pointer.
type valueCtx struct{ context.Context }
