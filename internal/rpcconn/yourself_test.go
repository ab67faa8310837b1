package rpcconn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// The raw peer plays the C++ reference's part in a tail call: it answers
// a call of ours by sending a call back to us with sendResultsTo.yourself
// and a Return with takeFromOtherQuestion naming it.

// answerBootstrap answers our Bootstrap with the peer's capability 5.
func (p *rawPeer) answerBootstrap() {
	p.t.Helper()
	m := p.expect(rpccp.Message_Which_bootstrap)
	b, _ := m.Bootstrap()
	qid := b.QuestionId()
	p.send(func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(qid)
		r.SetReleaseParamCaps(false)
		res, _ := r.NewResults()
		res.SetContent(capnp.NewInterface(res.Segment(), 0).ToPtr())
		ct, _ := res.NewCapTable(1)
		ct.At(0).SetSenderHosted(5)
	})
}

// tailSetup connects us to the raw peer both ways: boot is the peer's
// capability 5 on our side, export is our bootstrap's ID on the peer's.
func tailSetup(t *testing.T) (c *Conn, p *rawPeer, ts *testServer, boot testschema.Slow, export uint32) {
	t.Helper()
	c, p, ts = newRawPair(t, nil)
	b := c.Bootstrap(testCtx(t))
	t.Cleanup(b.Release)
	p.answerBootstrap()
	export = p.bootstrap(0)
	return c, p, ts, testschema.Slow(b), export
}

// ourCall makes a Slow.echo call to the peer and returns its question ID.
func ourCall(t *testing.T, ctx context.Context, p *rawPeer, boot testschema.Slow) (testschema.Slow_echo_Results_Future, capnp.ReleaseFunc, uint32) {
	t.Helper()
	f, rel := boot.Echo(ctx, func(p testschema.Slow_echo_Params) error { return p.SetS("mine") })
	t.Cleanup(rel)
	m := p.expect(rpccp.Message_Which_call)
	call, _ := m.Call()
	return f, rel, call.QuestionId()
}

func (p *rawPeer) expectFinish(qid uint32) {
	p.t.Helper()
	for {
		m := p.expect(rpccp.Message_Which_finish)
		if f, _ := m.Finish(); f.QuestionId() == qid {
			return
		}
	}
}

func yourself(build func(rpccp.Message)) func(rpccp.Message) {
	return func(m rpccp.Message) {
		build(m)
		c, _ := m.Call()
		c.SendResultsTo().SetYourself()
	}
}

func takeFrom(answer, other uint32) func(rpccp.Message) {
	return func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(answer)
		r.SetReleaseParamCaps(false)
		r.SetTakeFromOtherQuestion(other)
	}
}

func slowEcho(s string) func(capnp.Struct) {
	return func(st capnp.Struct) { testschema.Slow_echo_Params(st).SetS(s) }
}

// expectTailEnd reads until the Return of the peer's call other
// (resultsSentElsewhere) and our Finish for question qid.
func (p *rawPeer) expectTailEnd(other, qid uint32) {
	p.t.Helper()
	var ret, fin bool
	for !ret || !fin {
		m, err := p.recv()
		if err != nil {
			p.t.Fatalf("waiting for the tail call's end (return %v, finish %v): %v", ret, fin, err)
		}
		switch m.Which() {
		case rpccp.Message_Which_return:
			r, _ := m.Return()
			if r.AnswerId() == other {
				if r.Which() != rpccp.Return_Which_resultsSentElsewhere {
					p.t.Fatalf("return for the tail call: %v, want resultsSentElsewhere", r.Which())
				}
				ret = true
			}
		case rpccp.Message_Which_finish:
			f, _ := m.Finish()
			if f.QuestionId() == qid {
				fin = true
			}
		case rpccp.Message_Which_abort:
			e, _ := m.Abort()
			r, _ := e.Reason()
			p.t.Fatalf("abort: %s", r)
		}
	}
}

func TestTakeFromOtherQuestion(t *testing.T) {
	t.Run("after return", func(t *testing.T) {
		c, p, _, boot, export := tailSetup(t)
		ctx := testCtx(t)
		f, _, qid := ourCall(t, ctx, p, boot)
		p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 1, slowEcho("from 7"))))
		// The Return of 7 (resultsSentElsewhere) says it has returned.
		for {
			m := p.expect(rpccp.Message_Which_return)
			if r, _ := m.Return(); r.AnswerId() == 7 {
				if r.Which() != rpccp.Return_Which_resultsSentElsewhere {
					t.Fatalf("return %v", r.Which())
				}
				break
			}
		}
		p.send(takeFrom(qid, 7))
		r, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := r.S(); s != "from 7" {
			t.Fatalf("results %q, want the other call's", s)
		}
		p.expectFinish(qid)
		p.send(finish(7))
		// A barrier: had the Finish for 7 been refused, the Abort would
		// name 7.
		p.send(finish(8))
		p.expectAbort("finish for unknown question 8")
		<-c.Done()
	})
	t.Run("before return", func(t *testing.T) {
		c, p, ts, boot, export := tailSetup(t)
		ctx := testCtx(t)
		f, _, qid := ourCall(t, ctx, p, boot)
		// A call that takes a while: the question waits for it.
		p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 0, sleepArgs(200))))
		p.send(takeFrom(qid, 7))
		eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
		select {
		case <-f.Done():
			t.Fatal("question settled before the call it takes from")
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := f.Struct(); err != nil {
			t.Fatal(err)
		}
		p.expectTailEnd(7, qid)
		p.send(finish(7))
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
	})
	t.Run("exception", func(t *testing.T) {
		c, p, _, boot, export := tailSetup(t)
		ctx := testCtx(t)
		f, _, qid := ourCall(t, ctx, p, boot)
		p.send(yourself(callTo(7, importedCap(export), 0xbad, 0, nil)))
		p.send(takeFrom(qid, 7))
		if _, err := f.Struct(); err == nil || !strings.Contains(err.Error(), "unimplemented") {
			t.Fatalf("err = %v, want the other call's error", err)
		}
		p.expectTailEnd(7, qid)
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
	})
	t.Run("canceled while waiting", func(t *testing.T) {
		c, p, ts, boot, export := tailSetup(t)
		ctx, cancel := context.WithCancel(testCtx(t))
		f, _, qid := ourCall(t, ctx, p, boot)
		p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 0, sleepArgs(60000))))
		p.send(takeFrom(qid, 7))
		eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
		cancel()
		if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		p.expectFinish(qid)
		// As the C++ reference does on our Finish: finish the other call,
		// which cancels it.
		p.send(finish(7))
		for {
			m := p.expect(rpccp.Message_Which_return)
			if r, _ := m.Return(); r.AnswerId() == 7 {
				break
			}
		}
		eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.canceled == 1 })
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
	})
	t.Run("disconnect while waiting", func(t *testing.T) {
		c, p, ts, boot, export := tailSetup(t)
		ctx := testCtx(t)
		f, _, qid := ourCall(t, ctx, p, boot)
		p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 0, sleepArgs(60000))))
		p.send(takeFrom(qid, 7))
		eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
		p.nc.Close()
		if _, err := f.Struct(); !IsDisconnected(err) {
			t.Fatalf("err = %v, want a disconnection", err)
		}
		<-c.Done()
	})
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTailCallMisuse: a takeFromOtherQuestion or resultsSentElsewhere
// that does not fit what we sent ends the connection with an Abort naming
// the fault.
func TestTailCallMisuse(t *testing.T) {
	cases := []struct {
		name string
		want string
		run  func(p *rawPeer, qids []uint32, export uint32)
	}{
		{"unknown other question", "takeFromOtherQuestion names unknown question 9", func(p *rawPeer, q []uint32, _ uint32) {
			p.send(takeFrom(q[0], 9))
		}},
		{"other question not redirected", "did not use sendResultsTo.yourself", func(p *rawPeer, q []uint32, e uint32) {
			p.send(callTo(7, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000)))
			p.send(takeFrom(q[0], 7))
		}},
		{"taken twice", "taken already", func(p *rawPeer, q []uint32, e uint32) {
			p.send(yourself(callTo(7, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(takeFrom(q[0], 7))
			p.send(takeFrom(q[1], 7))
		}},
		{"return after take", "return for unknown question", func(p *rawPeer, q []uint32, e uint32) {
			p.send(yourself(callTo(7, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(takeFrom(q[0], 7))
			p.send(func(m rpccp.Message) {
				r, _ := m.NewReturn()
				r.SetAnswerId(q[0])
				e, _ := r.NewException()
				e.SetReason("second")
			})
		}},
		{"take twice for one question", "return for unknown question", func(p *rawPeer, q []uint32, e uint32) {
			p.send(yourself(callTo(7, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(yourself(callTo(8, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(takeFrom(q[0], 7))
			p.send(takeFrom(q[0], 8))
		}},
		{"take for unknown question", "return for unknown question 40", func(p *rawPeer, _ []uint32, e uint32) {
			p.send(yourself(callTo(7, importedCap(e), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(takeFrom(40, 7))
		}},
		{"results sent elsewhere", "resultsSentElsewhere", func(p *rawPeer, q []uint32, _ uint32) {
			p.send(func(m rpccp.Message) {
				r, _ := m.NewReturn()
				r.SetAnswerId(q[0])
				r.SetResultsSentElsewhere()
			})
		}},
		{"redirected call on unknown export", "unknown export 77", func(p *rawPeer, _ []uint32, _ uint32) {
			p.send(yourself(callTo(7, importedCap(77), testschema.Slow_TypeID, 0, nil)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, p, _, boot, export := tailSetup(t)
			ctx := testCtx(t)
			f0, _, q0 := ourCall(t, ctx, p, boot)
			f1, _, q1 := ourCall(t, ctx, p, boot)
			tc.run(p, []uint32{q0, q1}, export)
			p.expectAbort(tc.want)
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("connection did not end")
			}
			var pe *ProtocolError
			if !errors.As(c.Err(), &pe) || pe.Remote {
				t.Fatalf("Err = %v, want a ProtocolError of ours", c.Err())
			}
			for _, f := range []testschema.Slow_echo_Results_Future{f0, f1} {
				if _, err := f.Struct(); !IsDisconnected(err) {
					t.Fatalf("call: %v, want a disconnection", err)
				}
			}
		})
	}
}

// TestTakeFromOtherQuestionEmbargo: calls pipelined on our question went
// to the peer, which sends them back to us as tail calls; once the
// question takes results naming a capability of ours, new calls on it
// wait for the Disembargo we send the peer, as after any Return that
// reveals a local capability.
func TestTakeFromOtherQuestionEmbargo(t *testing.T) {
	c, p, _, boot, export := tailSetup(t)
	ctx := testCtx(t)
	f, rel := schema.Init(boot).MakeEcho(ctx, nil)
	defer rel()
	m := p.expect(rpccp.Message_Which_call)
	call, _ := m.Call()
	qa := call.QuestionId()
	e := f.Result()
	p0, rel0 := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("p0") })
	defer rel0()
	m = p.expect(rpccp.Message_Which_call)
	call, _ = m.Call()
	qb := call.QuestionId()
	if tgt, _ := call.Target(); tgt.Which() != rpccp.MessageTarget_Which_promisedAnswer {
		t.Fatalf("pipelined call target %v", tgt.Which())
	}
	// The peer reflects both calls back to us, as the C++ reference does.
	p.send(yourself(callTo(7, importedCap(export), schema.Init_TypeID, 0, nil)))
	p.send(yourself(callTo(8, promisedAnswer(7, 0), schema.Echo_TypeID, 0, func(s capnp.Struct) {
		schema.Echo_echo_Params(s).SetEcho("p0")
	})))
	p.send(takeFrom(qa, 7))
	p.send(takeFrom(qb, 8))
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	// Our Disembargo, aimed at the pipelined capability, comes before
	// our Finish for the question.
	var embargoID uint32
	for embargoID == 0 {
		m, err := p.recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m.Which() {
		case rpccp.Message_Which_finish:
			if fm, _ := m.Finish(); fm.QuestionId() == qa {
				t.Fatal("Finish before the Disembargo")
			}
		case rpccp.Message_Which_disembargo:
			d, _ := m.Disembargo()
			tgt, _ := d.Target()
			pa, _ := tgt.PromisedAnswer()
			if d.Context().Which() != rpccp.Disembargo_context_Which_senderLoopback || pa.QuestionId() != qa {
				t.Fatalf("disembargo %v on %d", d.Context().Which(), pa.QuestionId())
			}
			embargoID = d.Context().SenderLoopback()
		}
	}
	p.expectFinish(qa)
	// embargo.Send holds the caller until the embargo lifts.
	d0 := make(chan string, 1)
	go func() {
		s, err := echo(ctx, e, "d0")
		if err != nil {
			s = err.Error()
		}
		d0 <- s
	}()
	select {
	case s := <-d0:
		t.Fatalf("a call overtook the embargo: %s", s)
	case <-time.After(30 * time.Millisecond):
	}
	if r, err := p0.Struct(); err != nil {
		t.Fatal(err)
	} else if s, _ := r.Result(); s != "p0" {
		t.Fatalf("p0 = %q", s)
	}
	p.send(func(m rpccp.Message) {
		d, _ := m.NewDisembargo()
		tgt, _ := d.NewTarget()
		tgt.SetImportedCap(5)
		d.Context().SetReceiverLoopback(embargoID)
	})
	if s := <-d0; s != "d0" {
		t.Fatalf("d0 = %q", s)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// TestTailSessionSeed checks that FuzzConn's tail-call seed does what it
// says: the connection's call gets the results of the peer's call back.
func TestTailSessionSeed(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	ctx := testCtx(t)
	boot := c.Bootstrap(ctx)
	defer boot.Release()
	s, err := func() (string, error) {
		fut, rel := schema.Echo(boot).Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("x") })
		defer rel()
		p.write(tailSession())
		r, err := fut.Struct()
		if err != nil {
			return "", err
		}
		return r.Result()
	}()
	if err != nil || s != "tail" {
		t.Fatalf("result %q, %v; want the tail call's", s, err)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// openCounts returns how many questions c counts as awaiting their
// Return: c.qOpen (under c.mu), its mirror c.openQ (what the writer's and
// the reading role's decisions read) and c.plainOpen.
func (c *Conn) openCounts() (qOpen int, openQ, plainOpen int32) {
	lc := c.lock()
	defer lc.unlock()
	return c.qOpen, c.openQ.Load(), c.plainOpen.Load()
}

func wantOpen(t *testing.T, c *Conn, n int) {
	t.Helper()
	if q, o, p := c.openCounts(); q != n || o != int32(n) || p != int32(n) {
		t.Fatalf("open questions: qOpen %d, openQ %d, plainOpen %d; want %d", q, o, p, n)
	}
}

// echoReturn answers the Slow.echo call qid with s.
func echoReturn(qid uint32, s string) func(rpccp.Message) {
	return func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(qid)
		r.SetReleaseParamCaps(false)
		res, _ := r.NewResults()
		st, _ := testschema.NewSlow_echo_Results(res.Segment())
		st.SetS(s)
		res.SetContent(st.ToPtr())
	}
}

// TestTailCallClosesQuestion: a question answered by a Return with
// takeFromOtherQuestion stops being counted open once it takes the other
// call's results (qOpen -> qReturned), once only, as after any Return;
// a later call counts one open question and none once returned. (The
// count stayed at 1 for ever: later calls went through the writer instead
// of being written at once, and the reading role saw a question open.)
func TestTailCallClosesQuestion(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, c *Conn, p *rawPeer, ts *testServer, boot testschema.Slow, export uint32)
	}{
		{"after return", func(t *testing.T, c *Conn, p *rawPeer, _ *testServer, boot testschema.Slow, export uint32) {
			f, _, qid := ourCall(t, testCtx(t), p, boot)
			wantOpen(t, c, 1)
			p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 1, slowEcho("from 7"))))
			for {
				m := p.expect(rpccp.Message_Which_return)
				if r, _ := m.Return(); r.AnswerId() == 7 {
					break
				}
			}
			wantOpen(t, c, 1)
			p.send(takeFrom(qid, 7))
			if r, err := f.Struct(); err != nil {
				t.Fatal(err)
			} else if s, _ := r.S(); s != "from 7" {
				t.Fatalf("results %q", s)
			}
			p.expectFinish(qid)
			p.send(finish(7))
		}},
		{"before return", func(t *testing.T, c *Conn, p *rawPeer, ts *testServer, boot testschema.Slow, export uint32) {
			f, _, qid := ourCall(t, testCtx(t), p, boot)
			p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 0, sleepArgs(100))))
			p.send(takeFrom(qid, 7))
			eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
			// Still waiting for the other call's results: open.
			wantOpen(t, c, 1)
			if _, err := f.Struct(); err != nil {
				t.Fatal(err)
			}
			p.expectTailEnd(7, qid)
			p.send(finish(7))
		}},
		{"exception", func(t *testing.T, c *Conn, p *rawPeer, _ *testServer, boot testschema.Slow, export uint32) {
			f, _, qid := ourCall(t, testCtx(t), p, boot)
			p.send(yourself(callTo(7, importedCap(export), 0xbad, 0, nil)))
			p.send(takeFrom(qid, 7))
			if _, err := f.Struct(); err == nil {
				t.Fatal("no error from the other call")
			}
			p.expectTailEnd(7, qid)
			p.send(finish(7))
		}},
		{"no finish needed", func(t *testing.T, c *Conn, p *rawPeer, _ *testServer, boot testschema.Slow, export uint32) {
			f, _, qid := ourCall(t, testCtx(t), p, boot)
			p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 1, slowEcho("from 7"))))
			p.send(func(m rpccp.Message) {
				takeFrom(qid, 7)(m)
				r, _ := m.Return()
				r.SetNoFinishNeeded(true)
			})
			if _, err := f.Struct(); err != nil {
				t.Fatal(err)
			}
			p.send(finish(7))
		}},
		{"canceled while waiting", func(t *testing.T, c *Conn, p *rawPeer, ts *testServer, boot testschema.Slow, export uint32) {
			ctx, cancel := context.WithCancel(testCtx(t))
			f, _, qid := ourCall(t, ctx, p, boot)
			p.send(yourself(callTo(7, importedCap(export), testschema.Slow_TypeID, 0, sleepArgs(60000))))
			p.send(takeFrom(qid, 7))
			eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.sleeping == 1 })
			cancel()
			if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			p.expectFinish(qid)
			wantOpen(t, c, 0)
			// The other call ends and hands its outcome to the canceled
			// question, which must not be uncounted a second time.
			p.send(finish(7))
			for {
				m := p.expect(rpccp.Message_Which_return)
				if r, _ := m.Return(); r.AnswerId() == 7 {
					break
				}
			}
			eventually(t, func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.canceled == 1 })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, p, ts, boot, export := tailSetup(t)
			wantOpen(t, c, 0)
			tc.run(t, c, p, ts, boot, export)
			wantOpen(t, c, 0)
			// A later call: one open question, and none once it returns.
			f, rel, qid := ourCall(t, testCtx(t), p, boot)
			wantOpen(t, c, 1)
			p.send(echoReturn(qid, "later"))
			if r, err := f.Struct(); err != nil {
				t.Fatal(err)
			} else if s, _ := r.S(); s != "later" {
				t.Fatalf("later call: %q", s)
			}
			rel()
			wantOpen(t, c, 0)
			if c.Err() != nil {
				t.Fatal(c.Err())
			}
		})
	}
}
