package rpcconn

import (
	"context"
	"fmt"
	"math/rand"
	"os"

	"go.uber.org/goleak"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

type tableSizes struct{ exports, imports, questions, answers int }

func (c *Conn) sizes() tableSizes {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s tableSizes
	for _, e := range c.exports {
		if e != nil {
			s.exports++
		}
	}
	for _, h := range c.imports {
		if !h.gone {
			s.imports++
		}
	}
	for _, q := range c.questions {
		if q != nil {
			s.questions++
		}
	}
	s.answers = len(c.answers)
	return s
}

// TestModel runs random sequences of calls, pipelined calls, failing
// calls, cancellations, capability holds and releases, and a disconnect,
// and checks every outcome against a model: while connected each call
// does what the server does; after the disconnect each fails with
// ErrDisconnected. At quiet points the tables must match the model: one
// import and export per capability held, no question or answer left.
func TestModel(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, int64(seed), false)
			if os.Getenv("RPCCONN_MODEL_LEAKS") == "1" {
				goleak.VerifyNone(t)
			}
		})
	}
}

// TestModelGoCapnpServer runs the model with go-capnp's rpc serving.
func TestModelGoCapnpServer(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 5
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, int64(1000+seed), true) })
	}
}

func runModel(t *testing.T, seed int64, gocapnpServer bool) {
	rng := rand.New(rand.NewSource(seed))
	ts := newTestServer()
	a, b := socketPair(t)
	var srv *Conn
	var srvClose func()
	if gocapnpServer {
		rc := rpc.NewConn(transport.NewStream(b), &rpc.Options{BootstrapClient: ts.client()})
		srvClose = func() { rc.Close(); <-rc.Done() }
	} else {
		srv = NewConn(b, &Options{BootstrapClient: ts.client()})
		srvClose = func() { srv.Close(); <-srv.Done() }
	}
	cl := NewConn(a, nil)
	defer func() {
		cl.Close()
		<-cl.Done()
		srvClose()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot := cl.Bootstrap(ctx)
	defer boot.Release()

	connected := true
	var held []schema.Echo // model: capabilities held
	type pending struct {
		f    *capnp.Future
		rel  capnp.ReleaseFunc
		want string // "" means an error is expected
	}
	var inflight []pending
	check := func(p pending) {
		t.Helper()
		st, err := p.f.Struct()
		defer p.rel()
		switch {
		case !connected || p.want == "#disc":
			if err == nil || !IsDisconnected(err) {
				t.Fatalf("seed %d: after disconnect: %v", seed, err)
			}
		case p.want == "":
			if err == nil || IsDisconnected(err) {
				t.Fatalf("seed %d: want a call error, got %v", seed, err)
			}
		default:
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			got, _ := schema.Echo_echo_Results(st).Result()
			if got != p.want {
				t.Fatalf("seed %d: got %q want %q", seed, got, p.want)
			}
		}
	}
	target := func() schema.Echo {
		if len(held) > 0 && rng.Intn(2) == 0 {
			return held[rng.Intn(len(held))]
		}
		return schema.Echo(boot)
	}
	send := func(e schema.Echo, s string) pending {
		f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
		want := s
		if s == "fail" {
			want = ""
		}
		if !connected {
			want = "#disc"
		}
		return pending{f.Future, rel, want}
	}
	quiet := func() {
		for _, p := range inflight {
			check(p)
		}
		inflight = nil
		if !connected {
			return
		}
		want := len(held) + 1 // and the bootstrap
		waitFor(t, func() bool {
			c := cl.sizes()
			if srv == nil {
				return c.imports == want && c.questions == 0
			}
			s := srv.sizes()
			return s.exports == want && c.imports == want && c.questions == 0 && s.answers == 0
		})
	}
	for op := 0; op < 60; op++ {
		switch r := rng.Intn(100); {
		case r < 30:
			inflight = append(inflight, send(target(), fmt.Sprint("m", op)))
		case r < 38:
			inflight = append(inflight, send(target(), "fail"))
		case r < 50: // pipelined: echo on makeEcho's promised result
			f, rel := schema.Init(target()).MakeEcho(ctx, nil)
			p := send(f.Result(), fmt.Sprint("p", op))
			inflight = append(inflight, p)
			if rng.Intn(2) == 0 {
				r, err := f.Struct()
				if connected {
					if err != nil {
						t.Fatalf("seed %d: makeEcho: %v", seed, err)
					}
					held = append(held, r.Result().AddRef())
				} else if !IsDisconnected(err) {
					t.Fatalf("seed %d: makeEcho after disconnect: %v", seed, err)
				}
			}
			inflight = append(inflight, pending{f.Future, rel, "#ignore"})
		case r < 60:
			if len(held) > 0 {
				i := rng.Intn(len(held))
				held[i].Release()
				held = append(held[:i], held[i+1:]...)
			}
		case r < 66:
			cctx, ccancel := context.WithCancel(ctx)
			f, rel := testschema.Slow(boot).Sleep(cctx, func(p testschema.Slow_sleep_Params) error {
				p.SetMs(60_000)
				return nil
			})
			ccancel()
			if _, err := f.Struct(); err == nil {
				t.Fatalf("seed %d: canceled call succeeded", seed)
			}
			rel()
		case r < 90:
			quiet()
		case r < 92:
			if connected {
				quiet()
				if rng.Intn(2) == 0 {
					srvClose()
				} else {
					cl.Close()
				}
				connected = false
			}
		}
		// A pending makeEcho is not itself checked for a value.
		var keep []pending
		for _, p := range inflight {
			if p.want == "#ignore" {
				p.f.Struct()
				p.rel()
				continue
			}
			keep = append(keep, p)
		}
		inflight = keep
	}
	quiet()
	for _, h := range held {
		h.Release()
	}
	held = nil
	quiet()
	close(ts.release)
}
