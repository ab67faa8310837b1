package rpcconn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

func forEachPair(t *testing.T, fn func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer)) {
	for _, k := range pairKinds {
		t.Run(k.name, func(t *testing.T) {
			ts := newTestServer()
			client, srv := newPair(t, k.ourClient, k.ourServer, ts.client())
			ctx := testCtx(t)
			boot := client.bootstrap(ctx)
			defer boot.Release()
			fn(t, ts, boot, client, srv)
		})
	}
}

func echo(ctx context.Context, e schema.Echo, s string) (string, error) {
	f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return "", err
	}
	return r.Result()
}

func TestEcho(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx := testCtx(t)
		for i := 0; i < 10; i++ {
			got, err := echo(ctx, schema.Echo(boot), "hello")
			if err != nil || got != "hello" {
				t.Fatalf("echo = %q, %v", got, err)
			}
		}
	})
}

func TestException(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		_, err := echo(testCtx(t), schema.Echo(boot), "fail")
		if err == nil || !strings.Contains(err.Error(), "echo refused") {
			t.Fatalf("err = %v, want echo refused", err)
		}
		if IsDisconnected(err) {
			t.Fatalf("IsDisconnected(%v)", err)
		}
		// The connection carries on.
		if got, err := echo(testCtx(t), schema.Echo(boot), "again"); err != nil || got != "again" {
			t.Fatalf("echo after exception = %q, %v", got, err)
		}
	})
}

func TestUnimplementedMethod(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		f, rel := schema.Init(boot).Hello(testCtx(t), nil)
		defer rel()
		if _, err := f.Struct(); err == nil {
			t.Fatal("hello on an object without it succeeded")
		}
	})
}

func TestPipelining(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx := testCtx(t)
		f, rel := schema.Init(boot).MakeEcho(ctx, nil)
		defer rel()
		e := f.Result() // pipelined: the call goes before makeEcho returns
		got, err := echo(ctx, e, "piped")
		if err != nil || got != "piped" {
			t.Fatalf("pipelined echo = %q, %v", got, err)
		}
		// Chained pipelining: makeEcho on the promised Echo.
		f2, rel2 := schema.Init(capnp.Client(e)).MakeEcho(ctx, nil)
		defer rel2()
		got, err = echo(ctx, f2.Result(), "chained")
		if err != nil || got != "chained" {
			t.Fatalf("chained echo = %q, %v", got, err)
		}
		// After resolution, calls go straight to the result.
		r, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		e2 := r.Result().AddRef()
		defer e2.Release()
		if got, err := echo(ctx, e2, "direct"); err != nil || got != "direct" {
			t.Fatalf("direct echo = %q, %v", got, err)
		}
	})
}

func TestCallbacks(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx := testCtx(t)
		for _, depth := range []uint32{0, 1, 2, 7} {
			f, rel := testschema.Callback(boot).Call(ctx, func(p testschema.Callback_call_Params) error {
				p.SetDepth(depth)
				return p.SetBack(newCallback())
			})
			r, err := f.Struct()
			if err != nil {
				rel()
				t.Fatalf("depth %d: %v", depth, err)
			}
			if r.Depth() != depth {
				t.Fatalf("depth %d: got %d", depth, r.Depth())
			}
			rel()
		}
	})
}

func TestCapabilityReturnedToOwner(t *testing.T) {
	// The client sends its own callback and the server returns it: the
	// client gets back its own object (receiverHosted both ways).
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx := testCtx(t)
		cb := newCallback()
		defer cb.Release()
		for i := 0; i < 3; i++ {
			f, rel := testschema.Callback(boot).Call(ctx, func(p testschema.Callback_call_Params) error {
				p.SetDepth(1)
				return p.SetBack(cb.AddRef())
			})
			r, err := f.Struct()
			if err != nil || r.Depth() != 1 {
				t.Fatalf("call = %v, %v", r.Depth(), err)
			}
			rel()
		}
	})
}

func TestCancel(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx, cancel := context.WithCancel(testCtx(t))
		f, rel := testschema.Slow(boot).Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
			p.SetMs(60_000)
			return nil
		})
		defer rel()
		waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
		cancel()
		if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
		waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.canceled == 1 })
		if got, err := echo(testCtx(t), schema.Echo(boot), "after"); err != nil || got != "after" {
			t.Fatalf("echo after cancel = %q, %v", got, err)
		}
	})
}

func TestDisconnect(t *testing.T) {
	forEachPair(t, func(t *testing.T, ts *testServer, boot capnp.Client, client, srv peer) {
		ctx := testCtx(t)
		f, rel := testschema.Slow(boot).Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
			p.SetMs(60_000)
			return nil
		})
		defer rel()
		waitFor(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
		srv.close()
		_, err := f.Struct()
		if err == nil {
			t.Fatal("call survived the server's end")
		}
		if _, ok := client.(ourPeer); ok {
			if !IsDisconnected(err) || !errors.Is(err, ErrDisconnected) || !capnp.IsDisconnected(err) {
				t.Fatalf("err = %v: not a disconnection", err)
			}
			_, err = echo(ctx, schema.Echo(boot), "late")
			if !IsDisconnected(err) {
				t.Fatalf("call after the end: %v", err)
			}
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
