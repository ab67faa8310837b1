package rpcconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// orderLog records the calls an object and its children receive.
type orderLog struct {
	mu   sync.Mutex
	got  []string
	live map[string]int // objects not shut down, by prefix
	gate chan struct{}  // if set, echo calls starting with "p" wait for it (see recorder)
}

func (l *orderLog) lives() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.live)
}

func (l *orderLog) add(s string) {
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
}

func (l *orderLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.got, " ")
}

// orderedObject serves Echo.echo (recorded as its argument) and
// Init.makeEcho (recorded as "make"; the new Echo records "child:"+arg).
func orderedObject(l *orderLog, prefix string) capnp.Client {
	l.mu.Lock()
	if l.live == nil {
		l.live = map[string]int{}
	}
	l.live[prefix]++
	l.mu.Unlock()
	return capnp.NewClient(server.New([]server.Method{
		{Method: capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0, InterfaceName: "Echo", MethodName: "echo"},
			Impl: func(ctx context.Context, call *server.Call) error {
				s, _ := schema.Echo_echo_Params(call.Args()).Echo()
				if l.gate != nil && strings.HasPrefix(s, "p") {
					select {
					case <-l.gate:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				l.add(prefix + s)
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				return schema.Echo_echo_Results(res).SetResult(s)
			}},
		{Method: capnp.Method{InterfaceID: schema.Init_TypeID, MethodID: 0, InterfaceName: "Init", MethodName: "makeEcho"},
			Impl: func(ctx context.Context, call *server.Call) error {
				l.add(prefix + "make")
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				child := orderedObject(l, "child:")
				return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(child)).ToPtr())
			}},
	}, nil, shutdownFunc(func() {
		l.mu.Lock()
		l.live[prefix]--
		l.mu.Unlock()
	})))
}

type shutdownFunc func()

func (f shutdownFunc) Shutdown() { f() }

// callsThroughPromise makes, on a local promise that target will resolve
// it to, the calls go-capnp queues in an AnswerQueue: makeEcho, a call
// pipelined on its result, and a direct call. resolve delivers them with
// RecvCall, pipelining on the PipelineCaller it gets for makeEcho.
func callsThroughPromise(ctx context.Context) (resolve func(target capnp.Client), wait func() (string, error)) {
	l, r := capnp.NewLocalPromise[schema.Init]()
	mf, mrel := l.MakeEcho(ctx, nil)
	cf, crel := mf.Result().Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("c0") })
	lf, lrel := schema.Echo(l).Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("l0") })
	resolve = func(target capnp.Client) { r.Fulfill(schema.Init(target)) }
	wait = func() (string, error) {
		defer l.Release()
		defer mrel()
		defer crel()
		defer lrel()
		if _, err := mf.Struct(); err != nil {
			return "", fmt.Errorf("makeEcho: %w", err)
		}
		c, err := cf.Struct()
		if err != nil {
			return "", fmt.Errorf("pipelined echo: %w", err)
		}
		d, err := lf.Struct()
		if err != nil {
			return "", fmt.Errorf("echo: %w", err)
		}
		cs, _ := c.Result()
		ds, _ := d.Result()
		return cs + "," + ds, nil
	}
	return resolve, wait
}

// TestPipelineOnEmbargoedCall: calls delivered to a capability under
// embargo (here by a local promise resolving to it) are held, and calls
// pipelined on a held call wait behind it instead of failing; everything
// reaches the object in the order it was made.
func TestPipelineOnEmbargoedCall(t *testing.T) {
	for _, k := range pairKinds {
		if !k.ourClient {
			continue // the embargo is the client's
		}
		t.Run(k.name, func(t *testing.T) {
			for round := 0; round < 10; round++ {
				ts := newTestServer()
				methods := append(ts.methods(), server.Method{Method: mirrorMethod, Impl: mirrorImpl})
				client, _ := newPair(t, k.ourClient, k.ourServer, capnp.NewClient(server.New(methods, nil, nil)))
				ctx := testCtx(t)
				boot := client.bootstrap(ctx)
				log := &orderLog{gate: make(chan struct{})}
				local := orderedObject(log, "")
				ans, rel := boot.SendCall(ctx, capnp.Send{
					Method:   mirrorMethod,
					ArgsSize: capnp.ObjectSize{PointerCount: 1},
					PlaceArgs: func(s capnp.Struct) error {
						return s.SetPtr(0, capnp.NewInterface(s.Segment(), s.Message().CapTable().Add(local.AddRef())).ToPtr())
					},
				})
				promised := schema.Echo(ans.Future().Field(0, nil).Client())
				var futs []schema.Echo_echo_Results_Future
				var rels []capnp.ReleaseFunc
				call := func(s string) {
					f, r := promised.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(s) })
					futs, rels = append(futs, f), append(rels, r)
				}
				call("p0")
				call("p1")
				resolve, wait := callsThroughPromise(ctx)
				if _, err := ans.Struct(); err != nil {
					t.Fatal(err)
				}
				close(log.gate)
				resolve(capnp.Client(promised).AddRef())
				call("d0")
				got, err := wait()
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if got != "c0,l0" {
					t.Fatalf("round %d: results %q", round, got)
				}
				for i, f := range futs {
					if _, err := f.Struct(); err != nil {
						t.Fatalf("round %d: call %d: %v", round, i, err)
					}
					rels[i]()
				}
				rel()
				// child:c0 goes to another object: only its presence counts.
				order := strings.Replace(log.String(), " child:c0", "", 1)
				if order != "p0 p1 make l0 d0" || !strings.Contains(log.String(), "child:c0") {
					t.Fatalf("round %d: calls arrived as %q", round, log.String())
				}
				local.Release()
				boot.Release()
				waitLive(t, log)
			}
		})
	}
}

// usePromiseMethod takes a capability (a promise the caller has not seen
// resolve yet) and makes callsThroughPromise on it.
var usePromiseMethod = capnp.Method{InterfaceID: 0xdeadbeef03, MethodID: 0, InterfaceName: "UsePromise", MethodName: "use"}

func usePromiseImpl(ctx context.Context, call *server.Call) error {
	call.Go()
	in, err := call.Args().Ptr(0)
	if err != nil {
		return err
	}
	back := in.Interface().Client()
	resolve, wait := callsThroughPromise(ctx)
	resolve(back.AddRef())
	got, err := wait()
	if err != nil {
		return err
	}
	res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
	if err != nil {
		return err
	}
	return schema.Echo_echo_Results(res).SetResult(got)
}

// TestPipelineOnReceiverAnswerCall: the peer hands back the promised
// result of a call still running here (receiverAnswer); calls on it wait
// in the answer, and calls pipelined on those wait behind them.
func TestPipelineOnReceiverAnswerCall(t *testing.T) {
	for _, k := range pairKinds {
		if !k.ourServer {
			continue // the answer is the server's
		}
		t.Run(k.name, func(t *testing.T) {
			log := &orderLog{}
			slow := server.Method{Method: slowMakeMethod, Impl: func(ctx context.Context, call *server.Call) error {
				call.Go()
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				return res.SetPtr(0, capnp.NewInterface(res.Segment(), res.Message().CapTable().Add(orderedObject(log, ""))).ToPtr())
			}}
			methods := []server.Method{slow, {Method: usePromiseMethod, Impl: usePromiseImpl}}
			client, _ := newPair(t, k.ourClient, k.ourServer, capnp.NewClient(server.New(methods, nil, nil)))
			ctx := testCtx(t)
			boot := client.bootstrap(ctx)
			defer boot.Release()
			for round := 0; round < 3; round++ {
				log.mu.Lock()
				log.got = nil
				log.mu.Unlock()
				ans, rel := boot.SendCall(ctx, capnp.Send{Method: slowMakeMethod})
				promised := ans.Future().Field(0, nil).Client()
				uans, urel := boot.SendCall(ctx, capnp.Send{
					Method:   usePromiseMethod,
					ArgsSize: capnp.ObjectSize{PointerCount: 1},
					PlaceArgs: func(s capnp.Struct) error {
						return s.SetPtr(0, capnp.NewInterface(s.Segment(), s.Message().CapTable().Add(promised.AddRef())).ToPtr())
					},
				})
				st, err := uans.Struct()
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if got, _ := schema.Echo_echo_Results(st).Result(); got != "c0,l0" {
					t.Fatalf("round %d: results %q", round, got)
				}
				urel()
				if _, err := ans.Struct(); err != nil {
					t.Fatal(err)
				}
				rel()
				order := strings.Replace(log.String(), " child:c0", "", 1)
				if order != "make l0" || !strings.Contains(log.String(), "child:c0") {
					t.Fatalf("round %d: calls arrived as %q", round, log.String())
				}
				waitLive(t, log)
			}
		})
	}
}

// waitLive waits until every object l counted has shut down.
func waitLive(t *testing.T, l *orderLog) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		n := 0
		for _, v := range l.live {
			n += v
		}
		l.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects still live: %s", l.lives())
		}
		time.Sleep(time.Millisecond)
	}
}

// recordingCaller is a PipelineCaller that answers every call at once
// with an empty struct and records the method names in order.
type recordingCaller struct {
	mu  *sync.Mutex
	got *[]string
}

func (f recordingCaller) PipelineRecv(_ context.Context, _ []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	f.mu.Lock()
	*f.got = append(*f.got, r.Method.MethodName)
	f.mu.Unlock()
	r.ReleaseArgs()
	if _, err := r.Returner.AllocResults(capnp.ObjectSize{}); err != nil {
		r.Returner.PrepareReturn(err)
	}
	r.Returner.Return()
	return f
}

func (f recordingCaller) PipelineSend(ctx context.Context, t []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	panic("not used")
}

// TestHeldCall: Send and Recv on a held call keep their order and never
// block; a held call that fails fails what was pipelined on it, chained.
func TestHeldCall(t *testing.T) {
	ctx := testCtx(t)
	m := func(name string) capnp.Method { return capnp.Method{InterfaceID: 1, MethodName: name} }
	send := func(pc capnp.PipelineCaller, name string) (*capnp.Answer, capnp.ReleaseFunc) {
		return pc.PipelineSend(ctx, nil, capnp.Send{Method: m(name), ArgsSize: capnp.ObjectSize{DataSize: 8},
			PlaceArgs: func(s capnp.Struct) error { s.SetUint64(0, 7); return nil }})
	}

	var mu sync.Mutex
	var got []string
	h := &heldCall{}
	a1, r1 := send(h, "a")
	a2, r2 := send(h, "b")
	select {
	case <-a1.Done():
		t.Fatal("answered before the held call was delivered")
	default:
	}
	h.settle(recordingCaller{&mu, &got}, nil)
	a3, r3 := send(h, "c") // straight through now
	for _, a := range []*capnp.Answer{a1, a2, a3} {
		if _, err := a.Struct(); err != nil {
			t.Fatal(err)
		}
	}
	r1()
	r2()
	r3()
	if fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("order %v", got)
	}

	// Failure: what was pipelined, and pipelined on that, fails with
	// the held call's error; later calls too.
	h = &heldCall{}
	b1, rb1 := send(h, "x")
	b2, rb2 := b1.PipelineSend(ctx, nil, capnp.Send{Method: m("y")})
	want := errors.New("held call failed")
	h.settle(nil, want)
	b3, rb3 := send(h, "z")
	for _, a := range []*capnp.Answer{b1, b2, b3} {
		if _, err := a.Struct(); !errors.Is(err, want) {
			t.Fatalf("err %v, want %v", err, want)
		}
	}
	rb1()
	rb2()
	rb3()

	// A delivery that gives no PipelineCaller fails pipelined calls
	// instead of crashing on nil.
	h = &heldCall{}
	c1, rc1 := send(h, "n")
	h.settle(nil, nil)
	if _, err := c1.Struct(); err == nil {
		t.Fatal("pipelined call on a call without a pipeline succeeded")
	}
	rc1()
}
