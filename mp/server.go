package mp

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// Concurrent is implemented by implementations that take calls
// concurrently: each call runs in a goroutine of its own as soon as it
// arrives, instead of one at a time in arrival order. Embed
// ConcurrentCalls to implement it.
type Concurrent interface {
	TakesConcurrentCalls() bool
}

// ConcurrentCalls implements Concurrent; embed it in an implementation
// whose methods are safe to run concurrently.
type ConcurrentCalls struct{}

// TakesConcurrentCalls returns true.
func (ConcurrentCalls) TakesConcurrentCalls() bool { return true }

// Releaser is implemented by implementations that want to know when no
// capability refers to them any more: every proxy for them (in this
// process or another) has been released, and no connection exports them.
// CapabilityReleased is called once per time the value was served, on
// the goroutine releasing the last reference; it must not block. The
// value itself may still be used by Go code that holds it.
type Releaser interface {
	CapabilityReleased()
}

// hooks maps local values to the server that stands for them while
// someone refers to it, so that a value passed twice is one capability.
var hooks sync.Map // hookKey -> *serverHook

type hookKey struct {
	impl any
	disp *dispatch
}

// serve returns a new reference to the server for impl, a value of an
// interface whose dispatch is d.
func serve(impl any, d *dispatch) capnp.Client {
	// Only pointers are remembered: comparing other values may panic,
	// and two equal values are not the same object.
	cache := reflect.TypeOf(impl).Kind() == reflect.Pointer
	key := hookKey{impl, d}
	if cache {
		if v, ok := hooks.Load(key); ok {
			if cl, ok := v.(*serverHook).weak.AddRef(); ok {
				return cl
			}
		}
	}
	h := &serverHook{impl: impl, disp: d}
	if c, ok := impl.(Concurrent); ok && c.TakesConcurrentCalls() {
		h.concurrent = true
	}
	cl := capnp.NewClient(h)
	h.weak = cl.WeakRef()
	if cache {
		h.key = &key
		hooks.Store(key, h)
	}
	return cl
}

// A Facet is one more interface that a capability answers, with the value
// that serves it: see Interface.ServeWith.
type Facet struct {
	disp *dispatch
	impl any
}

// Facet returns impl as a facet of another capability.
func (x *Interface[I]) Facet(impl I) Facet { return Facet{disp: x.disp, impl: impl} }

// ServeWith returns a new capability that answers I's methods with impl
// and the methods of each facet's interface with the facet's value: one
// capability, several interfaces, told apart by their type IDs (as a
// framework's control interface beside an application's own Init). A
// method of I's is looked for first, then the facets' in order. Calls on
// all of them share one turn (see the package's ordering rule), except
// those of a facet whose value takes concurrent calls (Concurrent): they
// run at once, so that a slow application call never holds them up. The
// capability is the caller's: a new reference.
func (x *Interface[I]) ServeWith(impl I, facets ...Facet) capnp.Client {
	h := &serverHook{impl: impl, disp: x.disp, facets: facets}
	if c, ok := any(impl).(Concurrent); ok && c.TakesConcurrentCalls() {
		h.concurrent = true
	}
	cl := capnp.NewClient(h)
	h.weak = cl.WeakRef()
	return cl
}

// A serverHook serves one local value as a capability: it delivers the
// calls that reach it (from a connection, or from go-capnp code in this
// process) in arrival order, one at a time (see the package's ordering
// rule), each in a goroutine of its own.
type serverHook struct {
	impl       any
	disp       *dispatch
	facets     []Facet // more interfaces the capability answers
	concurrent bool
	weak       capnp.WeakClient
	key        *hookKey

	mu      sync.Mutex
	busy    bool         // a call holds the turn
	waiting []turnWaiter // in arrival order

	// spare is a ServerCall to reuse: one that ran inline and left
	// nothing behind (see runOne).
	spare atomic.Pointer[ServerCall]
}

// A turnWaiter is a call waiting for its object's turn: a new call
// (start it) or one resuming after an outgoing call (wake it).
type turnWaiter struct {
	start  *ServerCall
	resume chan struct{} // with sc, the call resuming
	sc     *ServerCall
}

func (h *serverHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return rpcconn.SendHeld(ctx, h, s)
}

func (h *serverHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	impl := h.impl
	m := h.disp.lookup(r.Method.InterfaceID, r.Method.MethodID)
	for i := 0; m == nil && i < len(h.facets); i++ {
		f := h.facets[i]
		if m = f.disp.lookup(r.Method.InterfaceID, r.Method.MethodID); m != nil {
			impl = f.impl
		}
	}
	if m == nil {
		err := NotImplemented(fmt.Sprintf("%s: method @%d of interface @%#x", h.disp.name, r.Method.MethodID, r.Method.InterfaceID))
		r.Reject(err)
		return rpcconn.FailedCaller(err)
	}
	sc := h.spare.Swap(nil)
	if sc == nil {
		sc = &ServerCall{h: h}
	}
	sc.m, sc.r, sc.impl = m, r, impl
	sc.ctxv = handlerCtx{Context: ctx, sc: sc, gen: sc.gen}
	sc.ctx = &sc.ctxv
	if impl != h.impl {
		// A facet's calls keep their own order: one that takes
		// concurrent calls runs at once, whatever the main value does.
		if c, ok := impl.(Concurrent); ok && c.TakesConcurrentCalls() {
			sc.concurrent = true
			go sc.run()
			return sc
		}
	}
	h.enter(sc, ctx)
	return sc
}

func (h *serverHook) Brand() capnp.Brand { return capnp.Brand{Value: h} }

func (h *serverHook) String() string { return "mp server for " + h.disp.name }

func (h *serverHook) Shutdown() {
	if h.key != nil {
		hooks.CompareAndDelete(*h.key, h)
	}
	if r, ok := h.impl.(Releaser); ok {
		r.CapabilityReleased()
	}
}

// enter starts sc now if its object is free (or takes concurrent calls),
// or queues it. A call whose object is free runs on the goroutine that
// delivers it if its connection lets it (rpcconn.TakeInline, with ctx
// the delivery's context), with no goroutine started; should it block,
// the connection has another goroutine read meanwhile.
func (h *serverHook) enter(sc *ServerCall, ctx context.Context) {
	if h.concurrent {
		go sc.run()
		return
	}
	h.mu.Lock()
	if !h.busy {
		h.busy = true
		sc.holding = true
		h.mu.Unlock()
		if rpcconn.TakeInline(ctx) {
			// The connection keeps nothing of an inline delivery (it
			// drops the PipelineCaller Recv returns): sc may be reused
			// once it is over, and its method's context is one of its
			// own, which then stops naming it (handlerCtx.gen).
			sc.reusable = true
			sc.ctx = &handlerCtx{Context: ctx, sc: sc, gen: sc.gen}
			sc.run()
		} else {
			go sc.run()
		}
		return
	}
	h.waiting = append(h.waiting, turnWaiter{start: sc})
	h.mu.Unlock()
}

// passLocked gives the turn to the first waiter, or frees it. A new call
// given the turn is returned, for the caller to run (in a goroutine of
// its own, or in the one that served the call before it). The caller
// holds h.mu and held the turn.
func (h *serverHook) passLocked() *ServerCall {
	for len(h.waiting) > 0 {
		w := h.waiting[0]
		h.waiting[0] = turnWaiter{}
		h.waiting = h.waiting[1:]
		if w.start != nil {
			w.start.holding = true
			return w.start
		}
		close(w.resume)
		if !w.sc.over {
			w.sc.holding = true
			return nil
		}
		// The call returned while one of its goroutines waited to
		// resume: it needs the turn no more.
	}
	h.busy = false
	if cap(h.waiting) > 64 {
		h.waiting = nil
	}
	return nil
}

// A ServerCall is one call being served: generated server code reads its
// Params (with Decoder) and writes its Results (with Encoder). It is the
// PipelineCaller of the call, for calls pipelined on it while it runs.
type ServerCall struct {
	h          *serverHook
	m          *ServerMethod
	impl       any  // the value whose method it is
	concurrent bool // it runs outside the object's turn
	r          capnp.Recv
	ctx        *handlerCtx // its method's context: ctxv, or one of its own for a reusable call
	ctxv       handlerCtx
	enc        Encoder
	dec        Decoder

	results capnp.Struct
	alloced bool
	lent    []*Client // proxies made for the parameters
	handed  []*Client // proxies the method returned

	// Guarded by h.mu: the call's turn. holding: it runs alone now;
	// out: outgoing calls in flight, made with its context; over: it
	// has returned.
	holding bool
	out     int
	over    bool
	// reusable: it ran inline (enter), so nothing but its method's
	// context may refer to it once it is over; gen counts its uses, for
	// contexts of earlier ones to tell (handlerCtx.yield).
	reusable bool
	gen      uint64

	mu       sync.Mutex
	returned bool
	queued   []queuedCall // pipelined on the call before it returned
}

type queuedCall struct {
	ctx       context.Context
	transform []capnp.PipelineOp
	r         capnp.Recv
	held      *rpcconn.HeldCall
}

// Params returns the call's parameters, valid until the method returns.
func (sc *ServerCall) Params() capnp.Struct { return sc.r.Args }

// Decoder returns the decoder of the parameters.
func (sc *ServerCall) Decoder() *Decoder { return &sc.dec }

// Encoder returns the encoder of the results.
func (sc *ServerCall) Encoder() *Encoder { return &sc.enc }

// Results returns the results struct to fill, allocating it on first use.
func (sc *ServerCall) Results() (capnp.Struct, error) {
	if !sc.alloced {
		st, err := sc.r.Returner.AllocResults(sc.m.Method.ResultsSize)
		if err != nil {
			return capnp.Struct{}, err
		}
		sc.results, sc.alloced = st, true
	}
	return sc.results, nil
}

// run serves the call, in its own goroutine or inline (enter), and then
// the calls its object's turn passes to, one after the other: calls
// queued on a busy object (a stream's) cost no goroutine each, and no
// stack to grow again.
func (sc *ServerCall) run() {
	for sc != nil {
		sc = sc.runOne()
	}
}

// runOne serves sc and returns the call that its turn passed to, if any.
func (sc *ServerCall) runOne() *ServerCall {
	err := sc.serve()
	if err == nil && (sc.enc.ret == nil || sc.m.Method.ResultsSize != (capnp.ObjectSize{})) {
		// An empty results struct for methods without results; a
		// connection's Return needs none (it sends such a Return from a
		// template, building no message).
		_, err = sc.Results()
	}
	sc.r.ReleaseArgs()
	for i, c := range sc.lent {
		c.Close()
		sc.lent[i] = nil
	}
	sc.drain(err)
	ret := sc.r.Returner
	ret.PrepareReturn(err)
	ret.Return()
	ret.ReleaseResults()
	for i, c := range sc.handed {
		c.Close()
		sc.handed[i] = nil
	}

	h := sc.h
	h.mu.Lock()
	sc.over = true
	var next *ServerCall
	if sc.holding {
		sc.holding = false
		next = h.passLocked()
	}
	// With no outgoing call of its method still out, nothing refers to
	// a reusable call but contexts its method kept, which the new
	// generation disowns: it is cleared (under h.mu, where those
	// contexts look at it) and kept for the hook's next call.
	reuse := sc.reusable && sc.out == 0 && !sc.concurrent
	if reuse {
		*sc = ServerCall{h: h, gen: sc.gen + 1}
	}
	h.mu.Unlock()
	if reuse {
		h.spare.Store(sc)
	}
	return next
}

func (sc *ServerCall) serve() (err error) {
	ctx := context.Context(sc.ctx)
	conn := rpcconn.ConnFromContext(ctx)
	var size uint64
	if msg := sc.r.Args.Message(); msg != nil {
		size, _ = msg.TotalSize()
	}
	sc.dec.reset(DecodeBudget(size), true, conn)
	sc.dec.lent = &sc.lent
	sc.enc.handed = &sc.handed
	if l, ok := sc.r.Returner.(resultLender); ok {
		sc.enc.ret = l
	}
	defer func() {
		if v := recover(); v != nil {
			err = sc.recovered(ctx, conn, v)
		}
	}()
	if conn != nil {
		if ic := conn.Interceptor(); ic != nil {
			return ic(ctx, &rpcconn.CallInfo{Method: sc.m.Method.capnp(), Server: true, Conn: conn}, func(ctx context.Context) error {
				return sc.m.Serve(ctx, sc.impl, sc)
			})
		}
	}
	return sc.m.Serve(ctx, sc.impl, sc)
}

// recovered deals with a panic in a method: it is logged with its stack,
// the caller learns that the method failed (not our internals), and the
// connection that delivered the call is closed, as what the method left
// behind is unknown.
func (sc *ServerCall) recovered(ctx context.Context, conn *rpcconn.Conn, v any) error {
	name := sc.m.Method.String()
	log := slog.New(slog.DiscardHandler)
	if conn != nil {
		log = conn.Logger()
	}
	log.Error("panic in method", "method", name, "panic", v, "stack", string(debug.Stack()))
	cause := fmt.Errorf("panic in %s: the connection's state is unknown", name)
	if o, ok := rpcconn.OwnerFromContext(ctx).(interface{ CloseWithError(error) }); ok {
		o.CloseWithError(cause)
	} else if conn != nil {
		conn.CloseWithError(cause)
	}
	return fmt.Errorf("%s: internal error (panic)", name)
}

// drain hands the calls pipelined on sc to the capabilities in its
// results, in order, or fails them with err; from then on PipelineRecv
// finds the target in the returned answer.
func (sc *ServerCall) drain(err error) {
	for {
		sc.mu.Lock()
		q := sc.queued
		sc.queued = nil
		if len(q) == 0 {
			sc.returned = true
			sc.mu.Unlock()
			return
		}
		sc.mu.Unlock()
		for _, c := range q {
			if err != nil {
				c.r.Reject(err)
				c.held.Settle(nil, err)
				continue
			}
			cl, terr := resultTarget(sc.results, c.transform)
			if terr != nil {
				c.r.Reject(terr)
				c.held.Settle(nil, terr)
				continue
			}
			c.held.Settle(cl.RecvCall(c.ctx, c.r), nil)
			cl.Release()
		}
	}
}

// resultTarget returns a new reference to the capability at transform in
// results.
func resultTarget(results capnp.Struct, transform []capnp.PipelineOp) (capnp.Client, error) {
	p, err := capnp.Transform(results.ToPtr(), transform)
	if err != nil {
		return capnp.Client{}, fmt.Errorf("mp: pipelined call: %w", err)
	}
	iface := p.Interface()
	if !p.IsValid() || !iface.IsValid() {
		return capnp.Client{}, fmt.Errorf("mp: pipelined call on a field that is not a capability")
	}
	cl := iface.Client()
	if !cl.IsValid() {
		return capnp.Client{}, fmt.Errorf("mp: pipelined call on a null capability")
	}
	return cl.AddRef(), nil
}

// PipelineRecv implements capnp.PipelineCaller: a call pipelined on sc
// waits until sc returns, then goes to the capability in its results.
func (sc *ServerCall) PipelineRecv(ctx context.Context, transform []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	sc.mu.Lock()
	if !sc.returned {
		held := rpcconn.Hold(&r)
		t := make([]capnp.PipelineOp, len(transform))
		copy(t, transform)
		sc.queued = append(sc.queued, queuedCall{ctx: ctx, transform: t, r: r, held: held})
		sc.mu.Unlock()
		return held
	}
	sc.mu.Unlock()
	cl, err := rpcconn.ResultTarget(sc.r.Returner, transform)
	if err != nil {
		r.Reject(err)
		return rpcconn.FailedCaller(err)
	}
	defer cl.Release()
	if pc := cl.RecvCall(ctx, r); pc != nil {
		return pc
	}
	return rpcconn.FailedCaller(fmt.Errorf("mp: pipelined call refused"))
}

// PipelineSend implements capnp.PipelineCaller.
func (sc *ServerCall) PipelineSend(ctx context.Context, transform []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return rpcconn.SendHeld(ctx, pipelineTarget{sc, transform}, s)
}

// pipelineTarget is a capability in the results of a running call, as a
// hook for SendHeld: calls go to sc's PipelineRecv.
type pipelineTarget struct {
	sc        *ServerCall
	transform []capnp.PipelineOp
}

func (p pipelineTarget) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return rpcconn.SendHeld(ctx, p, s)
}
func (p pipelineTarget) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	return p.sc.PipelineRecv(ctx, p.transform, r)
}
func (p pipelineTarget) Brand() capnp.Brand { return capnp.Brand{} }
func (p pipelineTarget) Shutdown()          {}
func (p pipelineTarget) String() string     { return "mp pipelined call" }

// turnKey is the context key under which a served call's context carries
// the call, for the runtime to give up its turn during outgoing calls.
type turnKey struct{}

// handlerCtx is the context a method runs with: its delivery's context,
// plus the call, while sc's generation is gen (a reused ServerCall is
// another call's).
type handlerCtx struct {
	context.Context
	sc  *ServerCall
	gen uint64
}

func (c *handlerCtx) Value(key any) any {
	if key == (turnKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// AfterFunc passes the delivery context's AfterFunc on, so that contexts
// derived from a method's start no goroutine to watch it.
func (c *handlerCtx) AfterFunc(f func()) func() bool {
	if a, ok := c.Context.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(c.Context, f)
}

// turnOf returns the context of the served call that ctx is (or derives
// from), or nil.
func turnOf(ctx context.Context) *handlerCtx {
	if ctx == nil {
		return nil
	}
	if c, ok := ctx.(*handlerCtx); ok {
		return c
	}
	c, _ := ctx.Value(turnKey{}).(*handlerCtx)
	return c
}

// yield notes an outgoing call made with the context of c's call: the
// first one gives up the call's turn, so that the next call on its
// object may run. It reports whether it counted the call (then resume
// must follow): not if the call runs outside the turn, or is over and
// its ServerCall reused.
func (c *handlerCtx) yield() bool {
	sc := c.sc
	h := sc.h
	if h.concurrent {
		return false
	}
	h.mu.Lock()
	if sc.gen != c.gen || sc.concurrent {
		h.mu.Unlock()
		return false
	}
	sc.out++
	if sc.out == 1 && sc.holding {
		sc.holding = false
		if next := h.passLocked(); next != nil {
			go next.run()
		}
	}
	h.mu.Unlock()
	return true
}

// resume notes that an outgoing call counted by yield returned: once
// none is left, the call waits for its object's turn again (behind the
// calls that arrived meanwhile), unless it has returned already. (With
// an outgoing call out, its ServerCall is not reused.)
func (c *handlerCtx) resume() {
	sc := c.sc
	h := sc.h
	h.mu.Lock()
	sc.out--
	if sc.out > 0 || sc.over || sc.holding {
		h.mu.Unlock()
		return
	}
	if !h.busy {
		h.busy = true
		sc.holding = true
		h.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	h.waiting = append(h.waiting, turnWaiter{resume: ch, sc: sc})
	h.mu.Unlock()
	// If sc runs inline on the goroutine that reads its connection,
	// another reads while it waits: the call holding the turn may need
	// it.
	rpcconn.HandOff(sc.ctx.Context)
	<-ch // passLocked gave sc the turn
}
