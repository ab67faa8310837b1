package mp

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// A Client is the runtime half of a proxy: generated proxy types are
// defined as Client (type ChainClient mp.Client), and their methods make
// calls through it. It holds one reference to a capability, which Close
// releases.
type Client struct {
	cl   capnp.Client
	conn *rpcconn.Conn // the connection the capability came on, if known

	// imp is cl's hook once it is known to be an import of a
	// connection (the fast path); settled says that cl was found not to
	// be a promise, so that imp is final.
	imp     atomic.Pointer[rpcconn.Import]
	settled atomic.Bool
	// fwdConn is the connection of a forwarder in front of cl (package
	// protocol's proxy of a bootstrap capability), before imp is known.
	fwdConn atomic.Pointer[rpcconn.Conn]

	closed  atomic.Bool
	cleanup runtime.Cleanup
	track   *tracked // for leak reports; nil unless tracking

	stream streamState
}

// ErrClosed is the error of a call on a proxy after its Close.
var ErrClosed = errors.New("mp: call on a closed proxy")

func newClient(cl capnp.Client, conn *rpcconn.Conn) *Client {
	c := &Client{cl: cl, conn: conn}
	c.stream.onReturn = c.stream.returned
	d := dropped{cl: cl, track: trackNew()}
	c.track = d.track
	c.cleanup = runtime.AddCleanup(c, releaseDropped, d)
	return c
}

// NewClient returns a Client for cl, taking over the caller's reference.
// It is for code that wraps a go-capnp capability in a generated proxy
// itself; generated code and Interface.FromCapnp call it.
func NewClient(cl capnp.Client) *Client { return newClient(cl, nil) }

// Close releases the proxy's capability. Calls made on the proxy
// afterwards fail with ErrClosed. Close is idempotent and returns nil.
func (c *Client) Close() error {
	if c == nil || !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.cleanup.Stop()
	c.track.done()
	c.cl.Release()
	return nil
}

// Capnp returns the proxy's go-capnp capability, borrowed: valid until
// Close. Use AddRef on it to keep it longer.
func (c *Client) Capnp() capnp.Client { return c.cl }

// MPClient returns c; it makes *Client a proxy of no interface in
// particular (the Go form of Cap'n Proto's Capability type).
func (c *Client) MPClient() *Client { return c }

// String describes the capability, for logs.
func (c *Client) String() string { return c.cl.String() }

// ref returns a new reference to the capability, for passing it on.
func (c *Client) ref() capnp.Client {
	if c.closed.Load() {
		return capnp.ErrorClient(ErrClosed)
	}
	return c.cl.AddRef()
}

// target returns the import to call directly, or nil to call through
// go-capnp's client (a local server, a promise not resolved yet, an
// error).
func (c *Client) target() *rpcconn.Import {
	if imp := c.imp.Load(); imp != nil {
		return imp
	}
	if c.settled.Load() {
		return nil
	}
	cl := c.cl
	for range 8 {
		snap := cl.Snapshot()
		promise := snap.IsPromise()
		f, forwards := snap.Brand().Value.(forwarder)
		snap.Release()
		if promise {
			return nil
		}
		if !forwards {
			break
		}
		if c.fwdConn.Load() == nil {
			if rc, ok := f.(interface{ RPCConn() *rpcconn.Conn }); ok {
				c.fwdConn.Store(rc.RPCConn())
			}
		}
		cl = f.ForwardsTo()
	}
	imp := rpcconn.ImportOf(cl)
	if imp != nil {
		c.imp.Store(imp)
	}
	c.settled.Store(true)
	return imp
}

// plainError returns err, from go-capnp's client, as the fast path
// returns it: go-capnp prefixes a peer's error with the method's name,
// which the direct path does not.
func plainError(err error) error {
	var re *rpcconn.RemoteError
	if errors.As(err, &re) {
		return &exc.Exception{Type: re.Type, Cause: re}
	}
	return err
}

// forwarder is implemented by capnp.ClientHooks that forward every call
// to another capability and add nothing to the call itself (package
// protocol's proxies, which run cleanups when they are released): the
// runtime calls that capability directly, and the hook's lifetime stays
// the proxy's.
type forwarder interface {
	ForwardsTo() capnp.Client
}

// A Call is one call being made by a generated proxy: NewCall, fill
// Params (with Encoder), then Send (or SendStream, or Pipeline), read the
// results (with Decoder), and Finish. Finish may be deferred right after
// NewCall: it is idempotent and gives back whatever the call still
// holds.
type Call struct {
	client *Client
	ctx    context.Context
	m      *Method
	enc    Encoder
	dec    Decoder
	params capnp.Struct

	dc *rpcconn.Call // the direct call, on the fast path

	// On go-capnp's path: the parameters' own message, and once sent
	// the answer and its release.
	msg     *capnp.Message
	rel     capnp.ReleaseFunc
	results capnp.Struct
	place   func(capnp.Struct) error // c.placeArgs, made once per Call
	sendFn  func(context.Context) error

	// scope holds the results once a Data result has been borrowed
	// from them (Borrow): Finish hands them to it.
	scope *borrowScope
}

var callPool = sync.Pool{New: func() any {
	c := new(Call)
	c.place = c.placeArgs
	c.sendFn = c.send
	return c
}}

// NewCall starts a call to method m on the capability. ctx bounds the
// call: if it ends first, the call is canceled and fails with ctx's
// error.
func (c *Client) NewCall(ctx context.Context, m *Method) (*Call, error) {
	if c == nil {
		return nil, errors.New("mp: call on a nil proxy")
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	call := callPool.Get().(*Call)
	call.client, call.ctx, call.m = c, ctx, m
	call.enc.call = call
	if imp := c.target(); imp != nil {
		dc, err := imp.NewCall(m.capnp(), m.ParamsSize, m.Stream)
		if err != nil {
			call.Finish()
			return nil, err
		}
		call.dc = dc
		call.params = dc.Params()
		return call, nil
	}
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err == nil {
		call.params, err = capnp.NewRootStruct(seg, m.ParamsSize)
	}
	if err != nil {
		call.Finish()
		return nil, err
	}
	call.msg = msg
	return call, nil
}

// Params returns the parameters to fill before sending.
func (call *Call) Params() capnp.Struct { return call.params }

// Encoder returns the encoder of the parameters.
func (call *Call) Encoder() *Encoder { return &call.enc }

// Decoder returns the decoder of the results, after Send.
func (call *Call) Decoder() *Decoder { return &call.dec }

// Send sends the call and waits for its results, which are valid until
// Finish. While it waits, a method that made the call with its own
// context lets the next call on its object run (see the package's
// ordering rule).
func (call *Call) Send() (capnp.Struct, error) {
	ctx := call.ctx
	t := turnOf(ctx)
	if t != nil && !t.yield() {
		t = nil
	}
	if t != nil {
		if call.dc == nil || call.dc.Conn() != rpcconn.ConnFromContext(t.Context) {
			// The call waits on something other than a Return on the
			// connection that delivered t: if t runs inline on the
			// goroutine reading that one, another reads meanwhile.
			// (A direct call on the same connection reads its Return
			// itself.)
			rpcconn.HandOff(t.Context)
		}
	}
	var err error
	if ic := call.client.interceptor(); ic != nil {
		err = ic(ctx, &rpcconn.CallInfo{Method: call.m.capnp(), Conn: call.client.connection()}, call.sendFn)
	} else {
		err = call.send(ctx)
	}
	if t != nil {
		t.resume()
	}
	if err != nil {
		return capnp.Struct{}, err
	}
	return call.results, nil
}

func (c *Client) interceptor() rpcconn.Interceptor {
	if conn := c.connection(); conn != nil {
		return conn.Interceptor()
	}
	return nil
}

// connection returns the connection the capability is reached through,
// if known.
func (c *Client) connection() *rpcconn.Conn {
	if imp := c.imp.Load(); imp != nil {
		return imp.Conn()
	}
	if conn := c.fwdConn.Load(); conn != nil {
		return conn
	}
	return c.conn
}

func (call *Call) send(ctx context.Context) error {
	if dc := call.dc; dc != nil {
		if err := dc.Send(ctx); err != nil {
			return err
		}
		call.results = dc.Results()
		call.dec.reset(DecodeBudget(dc.ResultsSize()), false, call.client.connection())
		call.dec.call = call
		return nil
	}
	ans, rel := call.client.cl.SendCall(ctx, capnp.Send{Method: call.m.capnp(), ArgsSize: call.m.ParamsSize, PlaceArgs: call.place})
	call.rel = rel
	st, err := ans.Struct()
	if err != nil {
		return plainError(err)
	}
	call.results = st
	size, _ := st.Message().TotalSize()
	call.dec.reset(DecodeBudget(size), false, call.client.connection())
	call.dec.call = call
	return nil
}

// borrowResults reports whether a Data result may be read in place (the
// call's context borrows results, Borrow), and if so makes Finish keep
// the results for the borrow.
func (call *Call) borrowResults() bool {
	if call.scope != nil {
		return true
	}
	s := borrowOf(call.ctx)
	if s == nil || !s.open() {
		return false
	}
	call.scope = s
	return true
}

func (call *Call) placeArgs(s capnp.Struct) error {
	return s.CopyFrom(call.params)
}

// SendStream sends a call to a `-> stream` method without waiting for it
// to return: only for room under the connection's flow control. A call
// that fails makes every later stream call on the same proxy fail with
// its error; Flush waits for the calls sent and returns that error.
// SendStream finishes the call.
func (call *Call) SendStream() error {
	defer call.Finish()
	c := call.client
	if err := c.stream.sticky(); err != nil {
		return err
	}
	ctx := call.ctx
	if t := turnOf(ctx); t != nil && t.yield() {
		defer t.resume()
	}
	c.stream.begin()
	if dc := call.dc; dc != nil {
		call.dc = nil // it releases itself
		if err := dc.SendStream(ctx, c.stream.onReturn); err != nil {
			// A call not sent because its ctx ended leaves the stream
			// as it was; any other failure (the connection ended) is
			// the stream's, for Flush and later calls to return.
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				c.stream.abandon()
			} else {
				c.stream.returned(err)
			}
			return err
		}
		return nil
	}
	ans, rel := c.cl.SendCall(ctx, capnp.Send{Method: call.m.capnp(), ArgsSize: call.m.ParamsSize, PlaceArgs: call.place})
	// go-capnp's path has no callback for the Return: a goroutine waits
	// for it. It ends when the answer settles, which the end of the
	// connection or of the local call guarantees; Flush waits for it.
	go func() {
		_, err := ans.Struct()
		rel()
		c.stream.returned(err)
	}()
	return nil
}

// Finish gives back what the call holds: its parameters if it was never
// sent, its results once read. It is idempotent.
func (call *Call) Finish() {
	if call.client == nil {
		return
	}
	if s := call.scope; s != nil {
		// Borrowed results stay until the borrow's release.
		call.scope = nil
		if call.dc != nil {
			s.keep(call.dc.ReleaseKeepResults())
			call.dc = nil
		}
		if call.rel != nil {
			s.keep(call.rel)
			call.rel = nil
		}
	}
	if call.dc != nil {
		call.dc.Release()
		call.dc = nil
	}
	if call.rel != nil {
		call.rel()
		call.rel = nil
	}
	if call.msg != nil {
		call.msg.Release()
		call.msg = nil
	}
	call.client, call.ctx, call.m = nil, nil, nil
	call.params, call.results = capnp.Struct{}, capnp.Struct{}
	call.dec = Decoder{}
	call.enc = Encoder{}
	callPool.Put(call)
}

// A Pipeline is a call sent without waiting for its results, whose
// capabilities can be called at once: calls on them travel with the
// call, and wait at the peer for it to return (promise pipelining).
type Pipeline struct {
	ans  *capnp.Answer
	rel  func()
	conn *rpcconn.Conn
	refs atomic.Int32 // Field clients not closed yet, plus the creator's
}

// Pipeline sends the call and returns its pipeline. The caller takes the
// capabilities it wants with Field and then calls Done. Pipeline
// finishes the call.
func (call *Call) Pipeline() *Pipeline {
	defer call.Finish()
	p := &Pipeline{conn: call.client.connection()}
	p.refs.Store(1)
	if dc := call.dc; dc != nil {
		call.dc = nil
		p.ans, p.rel = dc.SendPipelined(call.ctx)
		return p
	}
	ans, rel := call.client.cl.SendCall(call.ctx, capnp.Send{Method: call.m.capnp(), ArgsSize: call.m.ParamsSize, PlaceArgs: call.place})
	p.ans = ans
	// go-capnp's release waits for the answer: let it, off the caller's
	// goroutine. The wait ends when the answer settles, which the end
	// of the connection or of the local call guarantees.
	p.rel = func() {
		go func() {
			<-ans.Done()
			rel()
		}()
	}
	return p
}

// Field returns the capability in pointer field i of the results, as a
// new Client that calls may be made on before the call returns. If the
// call fails, so do they.
func (p *Pipeline) Field(i uint16) *Client {
	cl := p.ans.Future().Field(i, nil).Client().AddRef()
	p.refs.Add(1)
	cl.AttachReleaser(p.drop)
	return newClient(cl, p.conn)
}

// Done drops the creator's hold on the call; its answer is released once
// the clients from Field are closed too.
func (p *Pipeline) Done() { p.drop() }

func (p *Pipeline) drop() {
	if p.refs.Add(-1) == 0 {
		p.rel()
	}
}

// streamState tracks a proxy's calls to `-> stream` methods. A stream's
// sender and the connection's reader touch it for every call: its
// counts are atomic, so that neither takes a lock for a call; the lock
// guards only Flush's wait.
type streamState struct {
	onReturn func(error) // returned, made once
	open     atomic.Int64
	err      atomic.Pointer[error] // the first error of a stream call: sticky
	// waiting says that Flush may wait (idle is set): settle then looks
	// at it under mu. It is set before Flush reads open, and settle
	// reads it after changing open, so that one of them sees the other.
	waiting atomic.Bool
	mu      sync.Mutex
	idle    chan struct{} // closed once open is 0
}

func (s *streamState) sticky() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *streamState) begin() { s.open.Add(1) }

// abandon undoes begin for a call that was not sent.
func (s *streamState) abandon() { s.settle(nil) }

func (s *streamState) returned(err error) { s.settle(err) }

func (s *streamState) settle(err error) {
	if err != nil && s.err.Load() == nil {
		first := err // only an error costs an allocation
		s.err.CompareAndSwap(nil, &first)
	}
	if s.open.Add(-1) != 0 || !s.waiting.Load() {
		return
	}
	s.mu.Lock()
	var idle chan struct{}
	if s.open.Load() == 0 && s.idle != nil {
		idle, s.idle = s.idle, nil
		s.waiting.Store(false)
	}
	s.mu.Unlock()
	if idle != nil {
		close(idle)
	}
}

// wait waits until every stream call sent has returned, or ctx ends, and
// returns the sticky error (or ctx's).
func (s *streamState) wait(ctx context.Context) error {
	s.mu.Lock()
	s.waiting.Store(true)
	if s.open.Load() == 0 {
		if s.idle == nil {
			s.waiting.Store(false)
		}
		s.mu.Unlock()
		return s.sticky()
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	ch := s.idle
	s.mu.Unlock()
	select {
	case <-ch:
		return s.sticky()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every call to a `-> stream` method made so far on the
// proxy x has returned, and returns the first error among them (the
// error that later stream calls on x fail with). For a local value, or
// nil, it returns nil at once.
func Flush(ctx context.Context, x any) error {
	p, ok := x.(proxy)
	if !ok {
		return nil
	}
	c := p.MPClient()
	if c == nil {
		return nil
	}
	return c.stream.wait(ctx)
}
