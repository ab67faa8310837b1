package rpcconn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// validSession is a well-behaved client's side of a session: bootstrap,
// calls, a pipelined call, a callback with a capability, finishes and
// releases. FuzzConn mutates it.
func validSession() []byte {
	var b []byte
	add := func(f func(rpccp.Message)) { b = append(b, buildFrame(f)...) }
	add(func(m rpccp.Message) { x, _ := m.NewBootstrap(); x.SetQuestionId(0) })
	add(callTo(1, promisedAnswer(0), schema.Echo_TypeID, 0, func(s capnp.Struct) {
		schema.Echo_echo_Params(s).SetEcho("hi")
	}))
	add(callTo(2, promisedAnswer(0), schema.Init_TypeID, 0, nil))
	add(callTo(3, promisedAnswer(2, 0), schema.Echo_TypeID, 0, func(s capnp.Struct) {
		schema.Echo_echo_Params(s).SetEcho("piped")
	}))
	add(func(m rpccp.Message) {
		callTo(4, importedCap(0), testschema.Callback_TypeID, 0, func(s capnp.Struct) {
			testschema.Callback_call_Params(s).SetDepth(1)
			s.SetPtr(0, capnp.NewInterface(s.Segment(), 0).ToPtr())
		})(m)
		c, _ := m.Call()
		params, _ := c.Params()
		ct, _ := params.NewCapTable(1)
		ct.At(0).SetSenderHosted(0)
	})
	add(callTo(5, importedCap(0), testschema.Slow_TypeID, 0, sleepArgs(1)))
	for q := uint32(0); q < 6; q++ {
		add(finish(q))
	}
	add(func(m rpccp.Message) { r, _ := m.NewRelease(); r.SetId(0); r.SetReferenceCount(1) })
	return b
}

func fuzzSeeds() [][]byte {
	seeds := [][]byte{nullBodyReturn, validSession()}
	for w := rpccp.Message_Which(0); w < 16; w++ {
		seeds = append(seeds, rpcmsg.NullBody(w))
	}
	return append(seeds, tailSession())
}

// tailSession answers the connection's bootstrap request, then answers
// its call (question 1) as the C++ reference answers a call it reflects:
// a Call back with sendResultsTo.yourself and a Return with
// takeFromOtherQuestion.
func tailSession() []byte {
	var b []byte
	add := func(f func(rpccp.Message)) { b = append(b, buildFrame(f)...) }
	add(func(m rpccp.Message) {
		r, _ := m.NewReturn()
		r.SetAnswerId(0)
		r.SetReleaseParamCaps(false)
		res, _ := r.NewResults()
		res.SetContent(capnp.NewInterface(res.Segment(), 0).ToPtr())
		ct, _ := res.NewCapTable(1)
		ct.At(0).SetSenderHosted(5)
	})
	add(func(m rpccp.Message) { x, _ := m.NewBootstrap(); x.SetQuestionId(0) })
	add(yourself(callTo(7, importedCap(0), schema.Echo_TypeID, 0, func(s capnp.Struct) {
		schema.Echo_echo_Params(s).SetEcho("tail")
	})))
	add(takeFrom(1, 7))
	add(finish(7))
	add(finish(0))
	return b
}

// TestWriteFuzzSeeds writes the seed corpus to testdata/fuzz/FuzzConn when
// RPCCONN_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("RPCCONN_WRITE_SEEDS") != "1" {
		t.Skip("set RPCCONN_WRITE_SEEDS=1 to rewrite the committed seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzConn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzConn feeds arbitrary bytes to a live connection that serves the
// test object and has a bootstrap request and a call of its own in
// flight. Whatever the bytes, the connection must end (or carry on)
// without a panic, a hang or a leak once the peer closes.
func FuzzConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(fuzzOne)
}

func fuzzOne(t *testing.T, data []byte) {
	watchdog := time.AfterFunc(20*time.Second, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		os.WriteFile(filepath.Join(os.TempDir(), "rpcconn-fuzz-hang.txt"), buf[:n], 0o644)
		panic("FuzzConn: input hung the connection")
	})
	defer watchdog.Stop()
	{
		a, b := socketPair(t)
		ts := newTestServer()
		c := NewConn(a, &Options{BootstrapClient: ts.client(), MaxMessageSize: 1 << 20, MaxCalls: 64})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		boot := c.Bootstrap(ctx)
		fut, rel := schema.Echo(boot).Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("x") })
		go func() { // drain what the conn writes, so it never blocks on us
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		b.SetWriteDeadline(time.Now().Add(2 * time.Second))
		b.Write(data)
		b.(interface{ CloseWrite() error }).CloseWrite()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection did not end after the peer closed")
		}
		fut.Struct() // settled: by a Return or by the end
		rel()
		boot.Release()
		close(ts.release)
		b.Close()
	}
}
