package floor

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/bench/internal/benchschema"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// payload is the 8-byte argument of package bench's Echo/8B.
const payload = "12345678"

// callerHook is the least a connection can do behind capnpc-go's client
// code: place the arguments in a message (one, reused), make the Promise
// behind the Answer the generated code returns, and settle it with
// results (built once). It sends nothing.
type callerHook struct {
	args    capnp.Message
	results capnp.Ptr
	calls   int
}

func newCallerHook(t testing.TB, results func(*capnp.Segment) (capnp.Ptr, error)) *callerHook {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := results(seg)
	if err != nil {
		t.Fatal(err)
	}
	return &callerHook{results: ptr}
}

func (h *callerHook) Send(_ context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	h.calls++
	seg, err := h.args.Reset(capnp.SingleSegment(nil))
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), nothing
	}
	args, err := capnp.NewRootStruct(seg, s.ArgsSize)
	if err == nil && s.PlaceArgs != nil {
		err = s.PlaceArgs(args)
	}
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), nothing
	}
	p := capnp.NewPromise(s.Method, h, nil)
	p.Fulfill(h.results)
	return p.Answer(), nothing
}

// nothing is a ReleaseFunc that allocates no closure.
func nothing() {}

func (h *callerHook) Recv(_ context.Context, r capnp.Recv) capnp.PipelineCaller {
	r.Reject(errors.New("floor: callerHook serves no calls"))
	return nil
}

func (h *callerHook) PipelineSend(_ context.Context, _ []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, errors.New("floor: no pipelining")), nothing
}

func (h *callerHook) PipelineRecv(_ context.Context, _ []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	r.Reject(errors.New("floor: no pipelining"))
	return nil
}

func (h *callerHook) Brand() capnp.Brand { return capnp.Brand{} }
func (h *callerHook) Shutdown()          {}
func (h *callerHook) String() string     { return "floor.callerHook" }

func echoResults(seg *capnp.Segment) (capnp.Ptr, error) {
	res, err := schema.NewRootEcho_echo_Results(seg)
	if err != nil {
		return capnp.Ptr{}, err
	}
	if err := res.SetResult(payload); err != nil {
		return capnp.Ptr{}, err
	}
	return res.ToPtr(), nil
}

// echo is package bench's caller, as it is: the typed proxy, the reply
// checked through ResultBytes.
func echo(ctx context.Context, e schema.Echo, payload string) error {
	fut, release := e.Echo(ctx, func(p schema.Echo_echo_Params) error {
		return p.SetEcho(payload)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return err
	}
	got, err := res.ResultBytes()
	if err != nil {
		return err
	}
	if string(got) != payload {
		return errors.New("wrong reply")
	}
	return nil
}

// returner is the least a connection's Returner can do: results in one
// message, reused; done is signalled when the server is finished with
// them (ReleaseResults is the last thing server.Server does with a call).
type returner struct {
	results capnp.Message
	done    chan struct{}
	last    capnp.Struct
}

func newReturner() *returner { return &returner{done: make(chan struct{}, 1)} }

func (r *returner) AllocResults(sz capnp.ObjectSize) (capnp.Struct, error) {
	seg, err := r.results.Reset(capnp.SingleSegment(nil))
	if err != nil {
		return capnp.Struct{}, err
	}
	r.last, err = capnp.NewRootStruct(seg, sz)
	return r.last, err
}

func (r *returner) PrepareReturn(error) {}
func (r *returner) Return()             {}
func (r *returner) ReleaseResults()     { r.done <- struct{}{} }

// echoServer answers as ipc's Echo does: the argument copied once into
// the results.
type echoServer struct{}

func (echoServer) Echo(_ context.Context, call schema.Echo_echo) error {
	b, err := call.Args().EchoBytes()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	// Bytes copied straight into a list, as ipc's Echo does: SetResult
	// of a string would cost the conversion an allocation.
	l, err := capnp.NewUInt8List(res.Segment(), int32(len(b)+1))
	if err != nil {
		return err
	}
	copy(l.ToPtr().Data(), b)
	return capnp.Struct(res).SetPtr(0, l.ToPtr())
}

func (echoServer) EchoAfter(context.Context, schema.Echo_echoAfter) error {
	return errors.New("floor: not served")
}

// sinkServer counts pushes, as package bench's child does.
type sinkServer struct{ count, bytes atomic.Uint64 }

func (s *sinkServer) Push(_ context.Context, call benchschema.Sink_push) error {
	d, err := call.Args().Data()
	if err != nil {
		return err
	}
	s.count.Add(1)
	s.bytes.Add(uint64(len(d)))
	return nil
}

func (s *sinkServer) Done(_ context.Context, call benchschema.Sink_done) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetCount(s.count.Load())
	res.SetBytes(s.bytes.Load())
	return nil
}

// delivery is a call as a connection hands it to a local server: its
// arguments in a message (built once here; read-only to the server), and
// a Returner.
type delivery struct {
	snap  capnp.ClientSnapshot
	recv  capnp.Recv
	ret   *returner
	stuck *time.Timer // turns a server that never returns into a failure
}

func newDelivery(t testing.TB, c capnp.Client, m capnp.Method, size capnp.ObjectSize, place func(capnp.Struct) error) *delivery {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	args, err := capnp.NewRootStruct(seg, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := place(args); err != nil {
		t.Fatal(err)
	}
	ret := newReturner()
	return &delivery{
		snap:  c.Snapshot(),
		recv:  capnp.Recv{Method: m, Args: args, ReleaseArgs: nothing, Returner: ret},
		ret:   ret,
		stuck: time.NewTimer(time.Hour),
	}
}

// call delivers the call and waits until the server is done with it. The
// timer is reused, so that the wait allocates nothing.
func (d *delivery) call(ctx context.Context) error {
	d.stuck.Reset(time.Minute)
	d.snap.Recv(ctx, d.recv)
	select {
	case <-d.ret.done:
		return nil
	case <-d.stuck.C:
		return errors.New("floor: the server never returned")
	}
}

func (d *delivery) release() {
	d.stuck.Stop()
	d.snap.Release()
}

var (
	echoMethod = capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0, InterfaceName: "echo.capnp:Echo", MethodName: "echo"}
	pushMethod = capnp.Method{InterfaceID: benchschema.Sink_TypeID, MethodID: 0, InterfaceName: "bench.capnp:Sink", MethodName: "push"}
)

func placeEcho(s capnp.Struct) error { return schema.Echo_echo_Params(s).SetEcho(payload) }

func placePush(s capnp.Struct) error {
	return benchschema.Sink_push_Params(s).SetData(make([]byte, 64))
}

func pushParams(data []byte) func(benchschema.Sink_push_Params) error {
	return func(p benchschema.Sink_push_Params) error { return p.SetData(data) }
}

// cpuNs is this process's user and system CPU time so far.
func cpuNs(tb testing.TB) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// measure runs f b.N times and reports the process's CPU per op beside
// the wall time (the server's goroutine runs on another core).
func measure(b *testing.B, f func() error) {
	b.ReportAllocs()
	start := cpuNs(b)
	for b.Loop() {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuNs(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkCaller is the caller's side of one small call: package bench's
// echo against callerHook, and the Promise alone.
func BenchmarkCaller(b *testing.B) {
	ctx := context.Background()
	b.Run("echo8B", func(b *testing.B) {
		e := schema.Echo(capnp.NewClient(newCallerHook(b, echoResults)))
		defer e.Release()
		measure(b, func() error { return echo(ctx, e, payload) })
	})
	b.Run("promise", func(b *testing.B) {
		h := newCallerHook(b, echoResults)
		measure(b, func() error {
			p := capnp.NewPromise(echoMethod, h, nil)
			p.Fulfill(h.results)
			_, err := p.Answer().Struct()
			p.ReleaseClients()
			return err
		})
	})
}

// BenchmarkServer is the serving side of one small call: a received call
// delivered to capnpc-go's server code (server.Server) as a connection
// delivers it, waited for until the server has finished with it.
func BenchmarkServer(b *testing.B) {
	ctx := context.Background()
	b.Run("echo8B", func(b *testing.B) {
		e := schema.Echo_ServerToClient(echoServer{})
		defer e.Release()
		d := newDelivery(b, capnp.Client(e), echoMethod, capnp.ObjectSize{PointerCount: 1}, placeEcho)
		defer d.release()
		measure(b, func() error { return d.call(ctx) })
	})
	b.Run("push64B", func(b *testing.B) {
		s := benchschema.Sink_ServerToClient(&sinkServer{})
		defer s.Release()
		d := newDelivery(b, capnp.Client(s), pushMethod, capnp.ObjectSize{PointerCount: 1}, placePush)
		defer d.release()
		measure(b, func() error { return d.call(ctx) })
	})
}

// countingReturner counts the calls a server has finished with and says
// when it reaches want; it holds no results (a `-> stream` method's server
// allocates none).
type countingReturner struct {
	n, want atomic.Int64
	done    chan struct{}
}

func (r *countingReturner) AllocResults(capnp.ObjectSize) (capnp.Struct, error) {
	return capnp.Struct{}, errors.New("floor: no results here")
}
func (r *countingReturner) PrepareReturn(error) {}
func (r *countingReturner) Return()             {}
func (r *countingReturner) ReleaseResults() {
	if r.n.Add(1) == r.want.Load() {
		r.done <- struct{}{}
	}
}

// BenchmarkServerQueued is a stream of pushes as a connection delivers
// them when they arrive faster than the server takes them: every one
// queued at once, then a wait for the last. Its ns/op is the server's
// throughput with its goroutine never parked between calls.
func BenchmarkServerQueued(b *testing.B) {
	ctx := context.Background()
	s := benchschema.Sink_ServerToClient(&sinkServer{})
	defer s.Release()
	d := newDelivery(b, capnp.Client(s), pushMethod, capnp.ObjectSize{PointerCount: 1}, placePush)
	defer d.release()
	ret := &countingReturner{done: make(chan struct{}, 1)}
	ret.want.Store(int64(b.N))
	recv := d.recv
	recv.Returner = ret
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuNs(b)
	for range b.N {
		d.snap.Recv(ctx, recv)
	}
	select {
	case <-ret.done:
	case <-time.After(time.Minute):
		b.Fatalf("the server finished %d of %d pushes", ret.n.Load(), b.N)
	}
	b.ReportMetric(float64(cpuNs(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkStream is the sending side of one streamed 64-byte message:
// Sink.push -> stream through capnpc-go's client code against callerHook,
// whose answers are settled before Send returns, and WaitStreaming at the
// end, as in package bench's Stream64B.
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	s := benchschema.Sink(capnp.NewClient(newCallerHook(b, func(seg *capnp.Segment) (capnp.Ptr, error) {
		st, err := capnp.NewRootStruct(seg, capnp.ObjectSize{})
		return st.ToPtr(), err
	})))
	defer s.Release()
	data := make([]byte, 64)
	measure(b, func() error { return s.Push(ctx, pushParams(data)) })
	if err := s.WaitStreaming(); err != nil {
		b.Fatal(err)
	}
}

// The harness must do what the benchmarks claim: the caller gets the
// results the hook settled, the server sees the arguments and its
// results land in the returner, and every streamed message is sent.

func TestCallerGetsResults(t *testing.T) {
	h := newCallerHook(t, echoResults)
	e := schema.Echo(capnp.NewClient(h))
	defer e.Release()
	if err := echo(t.Context(), e, payload); err != nil {
		t.Fatal(err)
	}
	if err := echo(t.Context(), e, "other"); err == nil {
		t.Fatal("a reply other than the argument was accepted")
	}
	if h.calls != 2 {
		t.Fatalf("the hook saw %d calls, want 2", h.calls)
	}
}

func TestServerEchoes(t *testing.T) {
	e := schema.Echo_ServerToClient(echoServer{})
	defer e.Release()
	d := newDelivery(t, capnp.Client(e), echoMethod, capnp.ObjectSize{PointerCount: 1}, placeEcho)
	defer d.release()
	for range 3 {
		if err := d.call(t.Context()); err != nil {
			t.Fatal(err)
		}
		got, err := schema.Echo_echo_Results(d.ret.last).Result()
		if err != nil || got != payload {
			t.Fatalf("results %q, %v; want %q", got, err, payload)
		}
	}
}

func TestServerCountsPushes(t *testing.T) {
	sink := &sinkServer{}
	s := benchschema.Sink_ServerToClient(sink)
	defer s.Release()
	d := newDelivery(t, capnp.Client(s), pushMethod, capnp.ObjectSize{PointerCount: 1}, placePush)
	defer d.release()
	for range 5 {
		if err := d.call(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n, bytes := sink.count.Load(), sink.bytes.Load(); n != 5 || bytes != 5*64 {
		t.Fatalf("the server counted %d pushes of %d bytes; want 5 and 320", n, bytes)
	}
}

func TestStreamSendsEveryMessage(t *testing.T) {
	h := newCallerHook(t, func(seg *capnp.Segment) (capnp.Ptr, error) {
		st, err := capnp.NewRootStruct(seg, capnp.ObjectSize{})
		return st.ToPtr(), err
	})
	s := benchschema.Sink(capnp.NewClient(h))
	defer s.Release()
	for range 100 {
		if err := s.Push(t.Context(), pushParams(make([]byte, 64))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitStreaming(); err != nil {
		t.Fatal(err)
	}
	if h.calls != 100 {
		t.Fatalf("the hook saw %d pushes, want 100", h.calls)
	}
}
