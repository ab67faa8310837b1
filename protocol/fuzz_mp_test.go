package protocol_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// FuzzMPConn feeds arbitrary bytes, as a client would send them, to a
// connection whose bootstrap capability is mptestschema's Maker served
// through mp (fzMaker, through protocol.Serve on a socketpair): the
// generated server code decodes what the bytes say and calls the
// methods. Whatever the bytes, the connection must either end or stay
// healthy (if they were whole messages, it answers a Bootstrap sent
// after them), and once the client closes its side it must end within a
// bounded time, without a panic (nothing logged at Error but the panic
// the fuzz input may ask a method for), and leave no goroutine or
// descriptor behind.
//
// The seeds in testdata/fuzz/FuzzMPConn are client sessions recorded
// through generated proxies, rewritten so that a replay that does not
// wait for the server's replies still reaches every method (replayable;
// TestMPConnSessionSeedRunsMethods checks), hand-made hostile calls, and
// inputs the fuzzer found interesting; rewrite the first two kinds with
// PROTOCOL_WRITE_SEEDS=1 go test -run TestWriteMPConnSeeds.
func FuzzMPConn(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		watchdog := time.AfterFunc(20*time.Second, func() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			os.WriteFile(filepath.Join(os.TempDir(), "protocol-mpconn-fuzz-hang.txt"), buf[:n], 0o644)
			panic("FuzzMPConn: input hung the connection; stacks in protocol-mpconn-fuzz-hang.txt")
		})
		defer watchdog.Stop()
		fdcheck.Check(t, patience)
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		runMPConn(t, data)
	})
}

// fzProbe is the question ID of the Bootstrap that checks a connection's
// health after a fuzz input.
const fzProbe = 1<<32 - 2

// runMPConn serves a fzMaker on one end of a socketpair, writes data to
// the other, probes the connection if data was whole messages, closes
// the client's side and waits for the connection to end. It returns
// which of the maker's methods ran.
func runMPConn(t *testing.T, data []byte) *fzCalls {
	t.Helper()
	server, client, err := socketpairNoT()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	log := &errorLog{}
	calls := &fzCalls{}
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(context.Background(), server, func(*protocol.Conn) capnp.Client {
			return mptestschema.MakerInterface.Capnp(&fzMaker{calls: calls})
		}, &protocol.Options{Logger: slog.New(log), Limits: protocol.Limits{MaxMessageSize: 1 << 20, MaxCallsInFlight: 64}})
	}()
	// Take what the server writes, so that it never blocks on us; note
	// when it has returned as many answers as data asks questions, and
	// the Return of the probe.
	questions := -1
	if fzWholeMessages(data) {
		questions = fzQuestions(data)
	}
	answered, probed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dec := capnp.NewDecoder(client)
		returns := 0
		for {
			msg, err := dec.Decode()
			if err != nil {
				io.Copy(io.Discard, client)
				return
			}
			m, _ := rpccp.ReadRootMessage(msg)
			if m.Which() != rpccp.Message_Which_return {
				continue
			}
			if r, err := m.Return(); err == nil && r.AnswerId() == fzProbe {
				close(probed)
				io.Copy(io.Discard, client)
				return
			}
			if returns++; returns == questions {
				close(answered)
			}
		}
	}()
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = client.Write(data) // fails once the server has ended the connection
	// Healthy or ended: if the bytes were whole messages and the server
	// took them all, it answers them (their methods run, so that replays
	// of sessions reach deep), and then a Bootstrap; or it ends the
	// connection. A question it cannot answer yet (one waiting for a
	// call back to us, which we do not answer) makes us wait only a
	// little.
	if err == nil && questions >= 0 {
		if questions > 0 {
			select {
			case <-answered:
			case err := <-served:
				served <- err
			case <-time.After(500 * time.Millisecond):
			}
		}
		client.Write(rpcmsg.Frame(rpcmsg.Bootstrap(fzProbe)))
		select {
		case <-probed:
		case err := <-served:
			served <- err
		case <-time.After(5 * time.Second):
			t.Fatal("the connection neither answered a Bootstrap nor ended")
		}
	}
	client.(*net.UnixConn).CloseWrite()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end after the client closed")
	}
	client.Close()
	wg.Wait()
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, m := range log.msgs {
		if strings.HasPrefix(m, "panic in method") && strings.Contains(m, "panic="+fzPanic) {
			continue // asked for
		}
		if len(m) > 4000 {
			m = m[:4000] + "..."
		}
		t.Errorf("logged at Error: %s", m)
	}
	return calls
}

// fzWholeMessages reports whether data is a sequence of whole frames.
func fzWholeMessages(data []byte) bool {
	for len(data) > 0 {
		if len(data) < 4 {
			return false
		}
		n := uint64(binary.LittleEndian.Uint32(data)) + 1
		hlen := 4 + 4*n
		hlen += hlen % 8
		if n > 512 || uint64(len(data)) < hlen {
			return false
		}
		total := hlen
		for i := uint64(0); i < n; i++ {
			total += 8 * uint64(binary.LittleEndian.Uint32(data[4+4*i:]))
		}
		if uint64(len(data)) < total {
			return false
		}
		data = data[total:]
	}
	return true
}

// fzQuestions counts the questions (Bootstrap and Call messages) in
// data, whole messages.
func fzQuestions(data []byte) int {
	n := 0
	eachMessage(data, func(m rpccp.Message) error {
		if w := m.Which(); w == rpccp.Message_Which_bootstrap || w == rpccp.Message_Which_call {
			n++
		}
		return nil
	})
	return n
}

// fzCalls records which methods of a fzMaker (and of what it made) ran.
type fzCalls struct {
	mu  sync.Mutex
	ran map[string]int
}

func (c *fzCalls) note(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ran == nil {
		c.ran = make(map[string]int)
	}
	c.ran[method]++
}

func (c *fzCalls) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for m := range c.ran {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// fzPanic is what Maker.fail("panic") panics with.
const fzPanic = "fuzz: asked to panic"

var errFuzzDeclared = mp.NewError("protocol_test.fuzzDeclared", "a declared error, as asked")

// fzMaker implements Maker for the fuzz target: every method works, and
// fail fails in each way a method can (a declared error, a plain one, a
// panic) as its code says.
// fzMaker's patience is how long its callbacks wait for a call back: a
// fuzz input never answers one (zero: 100 ms); a recorded session, a real
// client on a machine perhaps loaded by -race and other tests, always
// does, so it waits as long as the test.
type fzMaker struct {
	calls    *fzCalls
	patience time.Duration
}

func (m *fzMaker) MakeEcho(context.Context) (mptestschema.Echo, error) {
	m.calls.note("makeEcho")
	return &fzEcho{m.calls}, nil
}

func (m *fzMaker) Callback(context.Context) (mptestschema.Callback, error) {
	m.calls.note("callback")
	return &fzCallback{calls: m.calls, patience: m.patience}, nil
}

func (m *fzMaker) Sink(context.Context) (mptestschema.Sink, error) {
	m.calls.note("sink")
	return &fzSink{calls: m.calls}, nil
}

func (m *fzMaker) Identity(_ context.Context, e mptestschema.Echo) (mptestschema.Echo, error) {
	m.calls.note("identity")
	return e, nil
}

func (m *fzMaker) Fail(_ context.Context, code string) error {
	m.calls.note("fail")
	switch code {
	case "declared":
		return errFuzzDeclared
	case "plain":
		return errors.New("a plain error, as asked")
	case "panic":
		panic(fzPanic)
	}
	return nil
}

func (m *fzMaker) Count(_ context.Context, items []mptestschema.Item) (mptestschema.Maker_Count_Results, error) {
	m.calls.note("count")
	var sum uint64
	for _, it := range items {
		sum += it.Value
	}
	return mptestschema.Maker_Count_Results{N: uint32(len(items)), Sum: sum}, nil
}

type fzEcho struct{ calls *fzCalls }

func (e *fzEcho) Echo(_ context.Context, s string) (string, error) {
	e.calls.note("echo")
	return s, nil
}

// fzCallback calls back with depth-1 until 0, up to a depth of 8; it
// gives the call back its patience (see fzMaker).
type fzCallback struct {
	calls    *fzCalls
	patience time.Duration
}

func (c *fzCallback) Call(ctx context.Context, depth uint32, back mptestschema.Callback) (uint32, error) {
	c.calls.note("call")
	switch {
	case depth == 0:
		return 0, nil
	case depth > 8:
		return 0, errors.New("too deep")
	case back == nil:
		return 0, errors.New("no callback to call back")
	}
	patience := c.patience
	if patience == 0 {
		patience = 100 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	return back.Call(ctx, depth-1, c)
}

type fzSink struct {
	calls *fzCalls
	mu    sync.Mutex
	total uint64
	count uint32
}

func (s *fzSink) Push(_ context.Context, n uint32) error {
	s.calls.note("push")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total += uint64(n)
	s.count++
	return nil
}

func (s *fzSink) Total(context.Context) (mptestschema.Sink_Total_Results, error) {
	s.calls.note("total")
	s.mu.Lock()
	defer s.mu.Unlock()
	return mptestschema.Sink_Total_Results{Total: s.total, Count: s.count}, nil
}

// recordMPSession runs a real client session (run, on a Maker proxy)
// against a fzMaker and returns the bytes the client sent, made
// replayable.
func recordMPSession(t *testing.T, run func(ctx context.Context, m *mptestschema.MakerClient) error) []byte {
	t.Helper()
	a, b, err := socketpairNoT()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	crec, srec := newCutConn(a), newCutConn(b)
	crec.record, srec.record = true, true
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(ctx, srec, func(*protocol.Conn) capnp.Client {
			return mptestschema.MakerInterface.Capnp(&fzMaker{calls: &fzCalls{}, patience: time.Minute})
		}, nil)
	}()
	conn, proxy, err := protocol.Connect(ctx, crec, nil)
	if err != nil {
		t.Fatal(err)
	}
	maker := mptestschema.MakerInterface.FromCapnp(proxy).(*mptestschema.MakerClient)
	runErr := run(ctx, maker)
	mp.Release(maker)
	conn.Close()
	<-conn.Done()
	<-served
	if runErr != nil {
		t.Fatalf("recorded session: %v", runErr)
	}
	crec.mu.Lock()
	defer crec.mu.Unlock()
	srec.mu.Lock()
	defer srec.mu.Unlock()
	out, err := replayable(crec.written, srec.written)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// replayable rewrites a client's recorded stream (given the server's) for
// a replay that does not wait for the server's replies:
//   - every question gets an ID of its own (a client reuses an ID once it
//     has had the Return and sent the Finish; a replay sends the next call
//     before the server is done with the last);
//   - a capability the server returned is addressed as a field of the
//     question that returned it (promise pipelining), not by its export
//     ID, which the replay would use before the server has sent it;
//   - Finish and Release messages are left out: a replay would send them
//     before the server has returned, so that a Finish would cancel the
//     call and a Release would name a capability not exported yet (the
//     connection's end releases everything);
//   - the Abort that closing sent is left out (the server would drop its
//     replies to a peer that has gone).
//
// What answers the server's own calls to the client is left out, as a
// replay would send it before the server has asked: the client's
// Returns, and its calls on the capabilities that the server passed in
// its calls (with their Finishes and their Releases). The server's call
// back then gets no answer.
func replayable(client, server []byte) ([]byte, error) {
	// The questions, in order: what each ID stood for, each time.
	var next uint32
	held := make(map[uint32][]uint32) // recorded ID -> unique IDs, in order
	err := eachMessage(client, func(m rpccp.Message) error {
		var q uint32
		switch m.Which() {
		case rpccp.Message_Which_bootstrap:
			b, _ := m.Bootstrap()
			q = b.QuestionId()
		case rpccp.Message_Which_call:
			c, _ := m.Call()
			q = c.QuestionId()
		default:
			return nil
		}
		held[q] = append(held[q], next)
		next++
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Each reference to a capability the server sent, in order: where it
	// came from if it was in a Return's results (a question and a
	// field), or nil if it was a parameter of the server's own call. The
	// k-th Return for an ID answers the k-th question with it.
	type origin struct {
		q     uint32
		field uint16
	}
	refs := make(map[uint32][]*origin) // export ID -> references
	answered := make(map[uint32]int)
	sent := func(d rpccp.CapDescriptor) (uint32, bool) {
		switch d.Which() {
		case rpccp.CapDescriptor_Which_senderHosted:
			return d.SenderHosted(), true
		case rpccp.CapDescriptor_Which_senderPromise:
			return d.SenderPromise(), true
		}
		return 0, false
	}
	err = eachMessage(server, func(m rpccp.Message) error {
		var p rpccp.Payload
		q := ^uint32(0)
		switch m.Which() {
		case rpccp.Message_Which_call:
			c, _ := m.Call()
			p, _ = c.Params()
		case rpccp.Message_Which_return:
			r, _ := m.Return()
			k := answered[r.AnswerId()]
			answered[r.AnswerId()]++
			if r.Which() != rpccp.Return_Which_results {
				return nil
			}
			if qs := held[r.AnswerId()]; k < len(qs) {
				q = qs[k]
			}
			p, _ = r.Results()
		default:
			return nil
		}
		table, _ := p.CapTable()
		fields := make(map[uint32]uint16) // cap index -> results field
		if content, _ := p.Content(); q != ^uint32(0) {
			st := content.Struct()
			for i := range st.Size().PointerCount {
				if ptr, _ := st.Ptr(i); ptr.Interface().IsValid() {
					fields[uint32(ptr.Interface().Capability())] = i
				}
			}
		}
		for i := range table.Len() {
			id, ok := sent(table.At(i))
			if !ok {
				continue
			}
			var o *origin
			if f, ok := fields[uint32(i)]; ok {
				o = &origin{q, f}
			}
			refs[id] = append(refs[id], o)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	current := make(map[uint32]uint32) // recorded ID -> unique ID now
	asked := make(map[uint32]int)      // recorded ID -> questions so far
	released := make(map[uint32]int)   // export ID -> references released
	// find returns where the capability id that the client holds now
	// came from: the references it has not released are those of one
	// export, one object.
	find := func(id uint32) (origin, bool) {
		rs := refs[id]
		for i := released[id]; i < len(rs); i++ {
			if rs[i] != nil {
				return *rs[i], true
			}
		}
		return origin{}, false
	}
	promise := func(pa rpccp.PromisedAnswer, o origin) error {
		pa.SetQuestionId(o.q)
		ops, err := pa.NewTransform(1)
		if err != nil {
			return err
		}
		ops.At(0).SetGetPointerField(o.field)
		return nil
	}
	target := func(t rpccp.MessageTarget) error {
		switch t.Which() {
		case rpccp.MessageTarget_Which_promisedAnswer:
			pa, err := t.PromisedAnswer()
			if err != nil {
				return err
			}
			pa.SetQuestionId(current[pa.QuestionId()])
		case rpccp.MessageTarget_Which_importedCap:
			if o, ok := find(t.ImportedCap()); ok {
				pa, err := t.NewPromisedAnswer()
				if err != nil {
					return err
				}
				return promise(pa, o)
			}
		}
		return nil
	}
	caps := func(p rpccp.Payload) error {
		if !p.HasCapTable() {
			return nil
		}
		l, err := p.CapTable()
		if err != nil {
			return err
		}
		for i := range l.Len() {
			d := l.At(i)
			switch d.Which() {
			case rpccp.CapDescriptor_Which_receiverAnswer:
				pa, err := d.ReceiverAnswer()
				if err != nil {
					return err
				}
				pa.SetQuestionId(current[pa.QuestionId()])
			case rpccp.CapDescriptor_Which_receiverHosted:
				if o, ok := find(d.ReceiverHosted()); ok {
					pa, err := d.NewReceiverAnswer()
					if err != nil {
						return err
					}
					if err := promise(pa, o); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	dropped := make(map[uint32]bool) // unique question IDs left out
	var out []byte
	err = eachMessage(client, func(m rpccp.Message) error {
		switch m.Which() {
		case rpccp.Message_Which_abort, rpccp.Message_Which_return:
			return nil
		case rpccp.Message_Which_bootstrap:
			b, _ := m.Bootstrap()
			q := b.QuestionId()
			current[q] = held[q][asked[q]]
			asked[q]++
			b.SetQuestionId(current[q])
		case rpccp.Message_Which_call:
			c, _ := m.Call()
			t, err := c.Target()
			if err != nil {
				return err
			}
			q := c.QuestionId()
			current[q] = held[q][asked[q]]
			asked[q]++
			if t.Which() == rpccp.MessageTarget_Which_importedCap && len(refs[t.ImportedCap()]) == 0 ||
				t.Which() == rpccp.MessageTarget_Which_promisedAnswer && dropped[current[pipelinedOn(t)]] {
				dropped[current[q]] = true
				return nil
			}
			if err := target(t); err != nil {
				return err
			}
			p, err := c.Params()
			if err != nil {
				return err
			}
			if err := caps(p); err != nil {
				return err
			}
			c.SetQuestionId(current[q])
		case rpccp.Message_Which_finish:
			return nil
		case rpccp.Message_Which_release:
			r, _ := m.Release()
			released[r.Id()] += int(r.ReferenceCount())
			return nil
		case rpccp.Message_Which_disembargo:
			d, _ := m.Disembargo()
			t, err := d.Target()
			if err != nil {
				return err
			}
			if err := target(t); err != nil {
				return err
			}
		}
		b, err := m.Message().Marshal()
		if err != nil {
			return err
		}
		out = append(out, b...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pipelinedOn returns the question a promisedAnswer target names, as
// recorded.
func pipelinedOn(t rpccp.MessageTarget) uint32 {
	pa, _ := t.PromisedAnswer()
	return pa.QuestionId()
}

// eachMessage calls f with each message of a recorded stream.
func eachMessage(stream []byte, f func(rpccp.Message) error) error {
	dec := capnp.NewDecoder(bytes.NewReader(stream))
	for {
		msg, err := dec.Decode()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		m, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			return err
		}
		if err := f(m); err != nil {
			return err
		}
	}
}

// The parts of the recorded sessions.
var (
	fzCount = func(ctx context.Context, m *mptestschema.MakerClient) error {
		_, err := m.Count(ctx, []mptestschema.Item{{Value: 1, Label: "one"}, {Value: 2}, {Value: 1 << 40, Label: "big"}})
		return err
	}
	fzEchoes = func(ctx context.Context, m *mptestschema.MakerClient) error {
		e, err := m.MakeEcho(ctx)
		if err != nil {
			return err
		}
		defer mp.Release(e)
		_, err = e.Echo(ctx, "recorded")
		return err
	}
	fzPipelined = func(ctx context.Context, m *mptestschema.MakerClient) error {
		e := m.MakeEchoPipelined(ctx)
		defer mp.Release(e)
		_, err := e.Echo(ctx, "pipelined")
		return err
	}
	fzCallbacks = func(ctx context.Context, m *mptestschema.MakerClient) error {
		cb, err := m.Callback(ctx)
		if err != nil {
			return err
		}
		defer mp.Release(cb)
		_, err = cb.Call(ctx, 3, &fzCallback{calls: &fzCalls{}, patience: time.Minute})
		return err
	}
	fzIdentity = func(ctx context.Context, m *mptestschema.MakerClient) error {
		if _, err := m.Identity(ctx, &fzEcho{&fzCalls{}}); err != nil {
			return err
		}
		e, err := m.MakeEcho(ctx)
		if err != nil {
			return err
		}
		defer mp.Release(e)
		back, err := m.Identity(ctx, e)
		mp.Release(back)
		return err
	}
	fzStream = func(ctx context.Context, m *mptestschema.MakerClient) error {
		s, err := m.Sink(ctx)
		if err != nil {
			return err
		}
		defer mp.Release(s)
		for n := uint32(1); n <= 5; n++ {
			if err := s.Push(ctx, n); err != nil {
				return err
			}
		}
		if err := mp.Flush(ctx, s); err != nil {
			return err
		}
		_, err = s.Total(ctx)
		return err
	}
	fzFailures = func(ctx context.Context, m *mptestschema.MakerClient) error {
		for _, code := range []string{"declared", "plain", ""} {
			if err := m.Fail(ctx, code); (err == nil) != (code == "") {
				return fmt.Errorf("fail(%q) = %v", code, err)
			}
		}
		return nil
	}
)

// mpConnSeeds returns the seed corpus: recorded sessions and hostile
// calls.
func mpConnSeeds(t *testing.T) map[string][]byte {
	all := func(ctx context.Context, m *mptestschema.MakerClient) error {
		for _, f := range []func(context.Context, *mptestschema.MakerClient) error{fzCount, fzEchoes, fzPipelined, fzCallbacks, fzIdentity, fzStream, fzFailures} {
			if err := f(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}
	maker := mptestschema.MakerInterface.ID()
	bootstrap := rpcmsg.Frame(rpcmsg.Bootstrap(0))
	call := func(q uint32, target func(rpccp.MessageTarget), iface uint64, method uint16, args func(capnp.Struct)) []byte {
		return rpcmsg.Frame(rpcmsg.Call(q, target, iface, method, args))
	}
	seeds := map[string][]byte{
		"session":   recordMPSession(t, all),
		"count":     recordMPSession(t, fzCount),
		"echo":      recordMPSession(t, fzEchoes),
		"pipelined": recordMPSession(t, fzPipelined),
		"callback":  recordMPSession(t, fzCallbacks),
		"identity":  recordMPSession(t, fzIdentity),
		"stream":    recordMPSession(t, fzStream),
		"fail":      recordMPSession(t, fzFailures),
		"panic": recordMPSession(t, func(ctx context.Context, m *mptestschema.MakerClient) error {
			m.Fail(ctx, "panic")
			return nil
		}),
		"unknown-method":    cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 99, nil)),
		"unknown-interface": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), 0x123456789, 0, nil)),
		"push-on-maker":     cat(bootstrap, call(1, rpcmsg.ImportedCap(0), mptestschema.SinkInterface.ID(), 0, nil)),
		"count-of-text":     cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 5, rpcmsg.Text("not a list"))),
		"count-of-empty-structs": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 5, func(st capnp.Struct) {
			l, _ := capnp.NewCompositeList(st.Segment(), capnp.ObjectSize{}, 1<<28)
			st.SetPtr(0, l.ToPtr())
		})),
		"identity-of-missing-cap": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 3, func(st capnp.Struct) {
			st.SetPtr(0, capnp.NewInterface(st.Segment(), 7).ToPtr())
		})),
		"fail-of-struct": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 4, func(st capnp.Struct) {
			inner, _ := capnp.NewStruct(st.Segment(), capnp.ObjectSize{DataSize: 8})
			st.SetPtr(0, inner.ToPtr())
		})),
		"pipelined-on-missing-field": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 0, nil),
			call(2, rpcmsg.PromisedAnswer(1, 5), mptestschema.EchoInterface.ID(), 0, rpcmsg.Text("x"))),
		"pipelined-on-failed-call": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 4, rpcmsg.Text("declared")),
			call(2, rpcmsg.PromisedAnswer(1, 0), mptestschema.EchoInterface.ID(), 0, rpcmsg.Text("x"))),
		"callback-without-back": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 1, nil),
			call(2, rpcmsg.PromisedAnswer(1, 0), mptestschema.CallbackInterface.ID(), 0, func(st capnp.Struct) { st.SetUint32(0, 2) })),
		"push-then-finish": cat(bootstrap, call(1, rpcmsg.ImportedCap(0), maker, 2, nil),
			call(2, rpcmsg.PromisedAnswer(1, 0), mptestschema.SinkInterface.ID(), 0, func(st capnp.Struct) { st.SetUint32(0, 7) }),
			rpcmsg.Frame(rpcmsg.Finish(2)), rpcmsg.Frame(rpcmsg.Finish(1)),
			call(3, rpcmsg.PromisedAnswer(1, 0), mptestschema.SinkInterface.ID(), 1, nil)),
	}
	for w := rpccp.Message_Which(0); w < 16; w++ {
		seeds[fmt.Sprintf("null-body-%02d", w)] = rpcmsg.NullBody(w)
	}
	return seeds
}

// The recorded session reaches every method when replayed: the seeds
// exercise the generated server code, not only the framing.
func TestMPConnSessionSeedRunsMethods(t *testing.T) {
	leakCheck(t)
	session := recordMPSession(t, func(ctx context.Context, m *mptestschema.MakerClient) error {
		for _, f := range []func(context.Context, *mptestschema.MakerClient) error{fzCount, fzEchoes, fzPipelined, fzCallbacks, fzIdentity, fzStream, fzFailures} {
			if err := f(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	got := runMPConn(t, session).names()
	want := []string{"call", "callback", "count", "echo", "fail", "identity", "makeEcho", "push", "sink", "total"}
	if !slices.Equal(got, want) {
		t.Errorf("the replayed session ran %q, want %q", got, want)
	}
}

// TestWriteMPConnSeeds writes the seed corpus to testdata/fuzz/FuzzMPConn
// when PROTOCOL_WRITE_SEEDS=1.
func TestWriteMPConnSeeds(t *testing.T) {
	if os.Getenv("PROTOCOL_WRITE_SEEDS") != "1" {
		t.Skip("set PROTOCOL_WRITE_SEEDS=1 to rewrite the committed seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzMPConn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range mpConnSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
