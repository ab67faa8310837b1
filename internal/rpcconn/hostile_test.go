package rpcconn

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// rawPeer speaks the protocol by hand, to send what a well-behaved peer
// never would.
type rawPeer struct {
	t  testing.TB
	nc net.Conn
	r  *rpcmsg.Reader
}

// The hand-built messages come from rpcmsg; these are the names this
// package's tests know them by.
var (
	buildFrame     = rpcmsg.Frame
	callTo         = rpcmsg.Call
	importedCap    = rpcmsg.ImportedCap
	promisedAnswer = rpcmsg.PromisedAnswer
	finish         = rpcmsg.Finish
	nullBodyReturn = rpcmsg.NullBody(rpccp.Message_Which_return)
)

func newRawPair(t testing.TB, opts *Options) (*Conn, *rawPeer, *testServer) {
	t.Helper()
	a, b := socketPair(t)
	ts := newTestServer()
	if opts == nil {
		opts = &Options{}
	}
	opts.BootstrapClient = ts.client()
	c := NewConn(a, opts)
	p := newRawPeer(t, b)
	t.Cleanup(func() {
		close(ts.release)
		b.Close()
		c.Close()
		<-c.Done()
	})
	return c, p, ts
}

// newRawPeer plays the peer on nc.
func newRawPeer(t testing.TB, nc net.Conn) *rawPeer {
	return &rawPeer{t: t, nc: nc, r: rpcmsg.NewReader(t, nc, 5*time.Second, 0)}
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	p.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("raw write: %v", err)
	}
}

func (p *rawPeer) send(build func(m rpccp.Message)) { p.t.Helper(); p.write(buildFrame(build)) }

// recv reads the next message, or returns an error at the end.
func (p *rawPeer) recv() (rpccp.Message, error) { return p.r.Recv() }

// expect reads messages until one of kind w arrives.
func (p *rawPeer) expect(w rpccp.Message_Which) rpccp.Message { p.t.Helper(); return p.r.Expect(w) }

// expectAbort reads until an Abort whose reason contains want, then the
// end of the stream.
func (p *rawPeer) expectAbort(want string) {
	p.t.Helper()
	r := rpcmsg.AbortReason(p.expect(rpccp.Message_Which_abort))
	if !strings.Contains(r, want) {
		p.t.Fatalf("abort reason %q, want it to contain %q", r, want)
	}
	if _, err := p.recv(); err == nil {
		p.t.Fatal("message after abort")
	}
}

// bootstrap asks for the bootstrap capability as question qid and
// returns its export ID.
func (p *rawPeer) bootstrap(qid uint32) uint32 {
	p.t.Helper()
	p.send(func(m rpccp.Message) {
		b, _ := m.NewBootstrap()
		b.SetQuestionId(qid)
	})
	m := p.expect(rpccp.Message_Which_return)
	r, _ := m.Return()
	res, err := r.Results()
	if err != nil {
		p.t.Fatalf("bootstrap: %v", err)
	}
	ct, _ := res.CapTable()
	if ct.Len() != 1 || ct.At(0).Which() != rpccp.CapDescriptor_Which_senderHosted {
		p.t.Fatalf("bootstrap cap table: %v", ct)
	}
	return ct.At(0).SenderHosted()
}

func sleepArgs(ms uint32) func(capnp.Struct) {
	return func(s capnp.Struct) { testschema.Slow_sleep_Params(s).SetMs(ms) }
}

func finishKeep(qid uint32) func(rpccp.Message) {
	return func(m rpccp.Message) {
		f, _ := m.NewFinish()
		f.SetQuestionId(qid)
		f.SetReleaseResultCaps(false)
	}
}

func TestNullBodyReturnWhileBootstrapOpen(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	boot := c.Bootstrap(testCtx(t))
	defer boot.Release()
	p.expect(rpccp.Message_Which_bootstrap)
	p.write(nullBodyReturn)
	p.expectAbort("return with a null body")
	<-c.Done()
	var pe *ProtocolError
	if !errors.As(c.Err(), &pe) {
		t.Fatalf("Err = %v", c.Err())
	}
	_, err := echo(testCtx(t), schema.Echo(boot), "x")
	if !IsDisconnected(err) {
		t.Fatalf("call on the bootstrap: %v", err)
	}
}

// hostileCases are sequences that must end the connection with an Abort
// whose reason contains want.
var hostileCases = []struct {
	name string
	want string
	run  func(p *rawPeer)
}{
	{"call unknown export", "unknown export 7", func(p *rawPeer) {
		p.send(callTo(0, importedCap(7), schema.Echo_TypeID, 0, nil))
	}},
	{"duplicate question id", "already in use", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
		p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
	}},
	{"duplicate bootstrap id", "already in use", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
		p.send(func(m rpccp.Message) { b, _ := m.NewBootstrap(); b.SetQuestionId(1) })
	}},
	{"finish unknown question", "finish for unknown question 3", func(p *rawPeer) {
		p.send(finish(3))
	}},
	{"second finish", "question 1", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
		p.send(finish(1))
		p.send(finish(1))
	}},
	{"release unknown export", "release of unknown export 5", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(5); r.SetReferenceCount(1) })
	}},
	{"release too many", "release of 2 references", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(finishKeep(0))
		p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(id); r.SetReferenceCount(2) })
	}},
	{"double release", "unknown export", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(finishKeep(0))
		p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(id); r.SetReferenceCount(1) })
		p.send(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(id); r.SetReferenceCount(1) })
	}},
	{"return unknown question", "return for unknown question 9", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { r, _ := m.NewReturn(); r.SetAnswerId(9); r.NewResults() })
	}},
	{"return null results", "null results", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { r, _ := m.NewReturn(); r.SetAnswerId(0) })
	}},
	{"call null body", "call with a null body", func(p *rawPeer) {
		p.write(rpcmsg.NullBody(2))
	}},
	{"finish null body", "finish with a null body", func(p *rawPeer) { p.write(rpcmsg.NullBody(4)) }},
	{"resolve null body", "resolve with a null body", func(p *rawPeer) { p.write(rpcmsg.NullBody(5)) }},
	{"release null body", "release with a null body", func(p *rawPeer) { p.write(rpcmsg.NullBody(6)) }},
	// Kinds this package does not know: the error names the kind, read
	// before the message is released (reading it after crashed the reader
	// once the message's buffer was recycled).
	{"resolve unknown kind", "resolve 40: unknown kind", func(p *rawPeer) {
		p.send(func(m rpccp.Message) {
			r, _ := m.NewResolve()
			r.SetPromiseId(40)
			capnp.Struct(r).SetUint16(4, 9) // the union's discriminant
		})
	}},
	{"return unknown kind", "unsupported kind", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { b, _ := m.NewBootstrap(); b.SetQuestionId(0) })
		p.send(func(m rpccp.Message) {
			r, _ := m.NewReturn()
			r.SetAnswerId(0)
			capnp.Struct(r).SetUint16(6, 9) // the union's discriminant
		})
	}},
	{"disembargo null body", "disembargo with a null body", func(p *rawPeer) { p.write(rpcmsg.NullBody(13)) }},
	{"bootstrap null body", "bootstrap with a null body", func(p *rawPeer) { p.write(rpcmsg.NullBody(8)) }},
	{"call without target", "without a target", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { c, _ := m.NewCall(); c.NewParams() })
	}},
	{"call without params", "without params", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { c, _ := m.NewCall(); t, _ := c.NewTarget(); t.SetImportedCap(0) })
	}},
	{"call on unknown promised answer", "unknown promised answer 4", func(p *rawPeer) {
		p.send(callTo(0, promisedAnswer(4), schema.Echo_TypeID, 0, nil))
	}},
	{"call results to third party", "sendResultsTo", func(p *rawPeer) {
		p.send(func(m rpccp.Message) {
			callTo(0, importedCap(0), schema.Echo_TypeID, 0, nil)(m)
			c, _ := m.Call()
			c.SendResultsTo().SetThirdParty(capnp.Ptr{})
		})
	}},
	{"resolve non-promise", "not a promise", func(p *rawPeer) {
		id := p.bootstrap(0)
		// Send the server our own capability, then resolve it.
		p.send(callTo(1, importedCap(id), testschema.Callback_TypeID, 0, func(s capnp.Struct) {
			testschema.Callback_call_Params(s).SetDepth(5)
			s.SetPtr(0, capnp.NewInterface(s.Segment(), 0).ToPtr())
		}))
		setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetSenderHosted(40) })
		p.expect(rpccp.Message_Which_call) // the server calls back
		p.send(func(m rpccp.Message) {
			r, _ := m.NewResolve()
			r.SetPromiseId(40)
			e, _ := r.NewException()
			e.SetReason("broken")
		})
	}},
	{"double resolve", "promise 40", func(p *rawPeer) {
		p.bootstrap(0)
		setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetSenderPromise(40) })
		p.expect(rpccp.Message_Which_call) // the server calls back on it
		resolveTo := func(m rpccp.Message) {
			r, _ := m.NewResolve()
			r.SetPromiseId(40)
			e, _ := r.NewException()
			e.SetReason("broken")
		}
		p.send(resolveTo)
		p.send(resolveTo)
	}},
	{"resolve to itself", "promise resolves to itself", func(p *rawPeer) {
		p.bootstrap(0)
		setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetSenderPromise(40) })
		p.expect(rpccp.Message_Which_call) // the server calls back on it
		p.send(func(m rpccp.Message) {
			r, _ := m.NewResolve()
			r.SetPromiseId(40)
			d, _ := r.NewCap()
			d.SetSenderPromise(40)
		})
	}},
	{"resolve unknown promise", "resolve of unknown promise 9", func(p *rawPeer) {
		p.send(func(m rpccp.Message) {
			r, _ := m.NewResolve()
			r.SetPromiseId(9)
			e, _ := r.NewException()
			e.SetReason("x")
		})
	}},
	{"disembargo unknown embargo", "unknown embargo 3", func(p *rawPeer) {
		p.send(func(m rpccp.Message) {
			d, _ := m.NewDisembargo()
			t, _ := d.NewTarget()
			t.SetImportedCap(0)
			d.Context().SetReceiverLoopback(3)
		})
	}},
	{"disembargo on import target", "not a resolved promise", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(func(m rpccp.Message) {
			d, _ := m.NewDisembargo()
			t, _ := d.NewTarget()
			t.SetImportedCap(id)
			d.Context().SetSenderLoopback(1)
		})
	}},
	{"disembargo on local cap", "does not point back", func(p *rawPeer) {
		p.bootstrap(0)
		p.send(func(m rpccp.Message) {
			d, _ := m.NewDisembargo()
			t, _ := d.NewTarget()
			promisedAnswer(0)(t)
			d.Context().SetSenderLoopback(1)
		})
	}},
	{"disembargo on unreturned answer", "has not returned", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
		p.send(func(m rpccp.Message) {
			d, _ := m.NewDisembargo()
			t, _ := d.NewTarget()
			promisedAnswer(1)(t)
			d.Context().SetSenderLoopback(1)
		})
	}},
	{"unknown cap descriptor", "unsupported cap descriptor", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Callback_TypeID, 0, nil))
		setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.NewThirdPartyHosted() })
	}},
	{"receiverHosted unknown", "unknown export 77", func(p *rawPeer) {
		id := p.bootstrap(0)
		p.send(callTo(1, importedCap(id), testschema.Callback_TypeID, 0, nil))
		setCapTable(p, 1, func(d rpccp.CapDescriptor) { d.SetReceiverHosted(77) })
	}},
	{"unknown transform op", "unknown transform op", func(p *rawPeer) {
		p.bootstrap(0)
		p.send(func(m rpccp.Message) {
			callTo(1, promisedAnswer(0, 0), schema.Echo_TypeID, 0, nil)(m)
			c, _ := m.Call()
			t, _ := c.Target()
			pa, _ := t.PromisedAnswer()
			ops, _ := pa.Transform()
			// An op with an unknown union tag.
			capnp.Struct(ops.At(0)).SetUint16(0, 9)
		})
	}},
	{"peer abort", "", func(p *rawPeer) {
		p.send(func(m rpccp.Message) { e, _ := m.NewAbort(); e.SetReason("go away") })
	}},
	{"too many segments", "513 segments", func(p *rawPeer) {
		b := make([]byte, 8+4*513)
		binary.LittleEndian.PutUint32(b, 512)
		p.write(b)
	}},
	{"too large", "larger than", func(p *rawPeer) {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b[4:], 1<<26)
		p.write(b)
	}},
	{"garbage", "", func(p *rawPeer) {
		p.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\xff", 64)))
	}},
}

// setCapTable rewrites the last call's cap table: it resends the call
// with one descriptor. (The call sent just before is replaced.)
func setCapTable(p *rawPeer, qid uint32, set func(rpccp.CapDescriptor)) {
	// The previous call already went; send a fresh one with the table.
	p.send(func(m rpccp.Message) {
		callTo(qid+100, importedCap(0), testschema.Callback_TypeID, 0, func(s capnp.Struct) {
			testschema.Callback_call_Params(s).SetDepth(5)
			s.SetPtr(0, capnp.NewInterface(s.Segment(), 0).ToPtr())
		})(m)
		c, _ := m.Call()
		params, _ := c.Params()
		ct, _ := params.NewCapTable(1)
		set(ct.At(0))
	})
}

func TestHostile(t *testing.T) {
	for _, tc := range hostileCases {
		t.Run(tc.name, func(t *testing.T) {
			c, p, _ := newRawPair(t, nil)
			tc.run(p)
			if tc.name == "peer abort" {
				if _, err := p.recv(); err == nil {
					// fine: we may see nothing but the end
				}
			} else if tc.want != "" {
				p.expectAbort(tc.want)
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("connection did not end")
			}
			var pe *ProtocolError
			if !errors.As(c.Err(), &pe) {
				t.Fatalf("Err = %v, want a ProtocolError", c.Err())
			}
			if tc.name == "peer abort" && (!pe.Remote || pe.Reason != "go away") {
				t.Fatalf("Err = %#v", pe)
			}
		})
	}
}

// A Resolve for a promise we released before it resolved may cross our
// Release: it is dropped, and the connection carries on (go-capnp aborts
// healthy connections here: "incoming resolve: no such import ID").
func TestResolveAfterRelease(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	p.bootstrap(0)
	// Callback.call(depth 0) returns at once and releases its argument,
	// our promise 40, unresolved.
	p.send(func(m rpccp.Message) {
		callTo(1, importedCap(0), testschema.Callback_TypeID, 0, func(s capnp.Struct) {
			s.SetPtr(0, capnp.NewInterface(s.Segment(), 0).ToPtr())
		})(m)
		c, _ := m.Call()
		params, _ := c.Params()
		ct, _ := params.NewCapTable(1)
		ct.At(0).SetSenderPromise(40)
	})
	for {
		m := p.expect(rpccp.Message_Which_release)
		r, _ := m.Release()
		if r.Id() == 40 {
			break
		}
	}
	p.send(func(m rpccp.Message) {
		r, _ := m.NewResolve()
		r.SetPromiseId(40)
		e, _ := r.NewException()
		e.SetReason("late")
	})
	p.send(callTo(2, importedCap(0), testschema.Slow_TypeID, 1, func(s capnp.Struct) {
		testschema.Slow_echo_Params(s).SetS("alive")
	}))
	for {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		if r.AnswerId() == 2 {
			break
		}
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// A pipelined call on a field that is not a capability, on a null
// capability, or on an answer that failed, is an error for that call
// only (go-capnp crashes on these).
func TestPipelineOnNonCapability(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	id := p.bootstrap(0)
	// echo returns a struct whose pointer 0 is text, not a capability.
	p.send(callTo(1, importedCap(id), testschema.Slow_TypeID, 1, func(s capnp.Struct) {
		testschema.Slow_echo_Params(s).SetS("text")
	}))
	p.send(callTo(2, promisedAnswer(1, 0), schema.Echo_TypeID, 0, nil)) // text
	p.send(callTo(3, promisedAnswer(1, 1), schema.Echo_TypeID, 0, nil)) // out of range: null
	p.send(callTo(4, importedCap(id), schema.Echo_TypeID, 0, func(s capnp.Struct) {
		schema.Echo_echo_Params(s).SetEcho("fail")
	}))
	p.send(callTo(5, promisedAnswer(4, 0), schema.Echo_TypeID, 0, nil)) // failed answer
	want := map[uint32]rpccp.Return_Which{1: rpccp.Return_Which_results, 2: rpccp.Return_Which_exception,
		3: rpccp.Return_Which_exception, 4: rpccp.Return_Which_exception, 5: rpccp.Return_Which_exception}
	for len(want) > 0 {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		w, ok := want[r.AnswerId()]
		if !ok || r.Which() != w {
			t.Fatalf("return %d: %v", r.AnswerId(), r.Which())
		}
		delete(want, r.AnswerId())
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// Messages of later levels get an Unimplemented reply, and the connection
// carries on.
func TestUnknownMessage(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	p.send(func(m rpccp.Message) { j, _ := m.NewJoin(); j.SetQuestionId(3) })
	u := p.expect(rpccp.Message_Which_unimplemented)
	inner, _ := u.Unimplemented()
	if inner.Which() != rpccp.Message_Which_join {
		t.Fatalf("unimplemented echoes %v", inner.Which())
	}
	p.bootstrap(0)
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// A peer that keeps more calls open than MaxCalls is cut off.
func TestTooManyCalls(t *testing.T) {
	_, p, _ := newRawPair(t, &Options{MaxCalls: 4})
	id := p.bootstrap(0)
	p.send(finishKeep(0))
	for q := uint32(1); q <= 5; q++ {
		p.send(callTo(q, importedCap(id), testschema.Slow_TypeID, 0, sleepArgs(60000)))
	}
	p.expectAbort("more than 4 calls in flight")
}
