package mp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// socketPair returns the two ends of a unix stream socketpair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conv(fds[0]), conv(fds[1])
}

// pair is a client and a server connection on a socketpair, the server
// offering boot; the client's Maker is the server's bootstrap.
type pair struct {
	client, server *rpcconn.Conn
	maker          mptestschema.Maker
	// calls counts the Call messages the client sends; returns the
	// Return messages it receives.
	calls, returns atomic.Int32
}

func newPairB(b *testing.B) *pair { return newPair(b, &maker{}, nil) }

func newPair(t testing.TB, boot mptestschema.Maker, opts *rpcconn.Options) *pair {
	t.Helper()
	a, b := socketPair(t)
	p := &pair{}
	sopts := rpcconn.Options{BootstrapClient: mptestschema.MakerInterface.Capnp(boot)}
	copts := rpcconn.Options{Observe: func(sent bool, m rpccp.Message) {
		switch {
		case sent && m.Which() == rpccp.Message_Which_call:
			p.calls.Add(1)
		case !sent && m.Which() == rpccp.Message_Which_return:
			p.returns.Add(1)
		}
	}}
	if opts != nil {
		sopts.Interceptor = opts.Interceptor
		copts.Interceptor = opts.Interceptor
	}
	p.server = rpcconn.NewConn(a, &sopts)
	p.client = rpcconn.NewConn(b, &copts)
	p.maker = mptestschema.MakerInterface.FromCapnp(p.client.Bootstrap(context.Background()))
	t.Cleanup(func() {
		mp.Release(p.maker)
		p.client.Close()
		p.server.Close()
		<-p.client.Done()
		<-p.server.Done()
	})
	return p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// maker implements Maker.
type maker struct {
	mu       sync.Mutex
	made     int
	callback mptestschema.Callback
}

func (m *maker) MakeEcho(ctx context.Context) (mptestschema.Echo, error) {
	m.mu.Lock()
	m.made++
	m.mu.Unlock()
	return echo{}, nil
}

func (m *maker) Callback(ctx context.Context) (mptestschema.Callback, error) {
	if m.callback != nil {
		return m.callback, nil
	}
	return &callback{}, nil
}

func (m *maker) Sink(ctx context.Context) (mptestschema.Sink, error) { return &sink{}, nil }

func (m *maker) Identity(ctx context.Context, c mptestschema.Echo) (mptestschema.Echo, error) {
	return c, nil
}

var errNoSuchThing = mp.NewError("mptest.noSuchThing", "no such thing")
var errBusy = mp.NewErrorOfType(mp.Overloaded, "mptest.busy", "busy, try later")
var errLostUpstream = mp.NewErrorOfType(mp.Disconnected, "mptest.lostUpstream", "lost the upstream server")

func (m *maker) Fail(ctx context.Context, code string) error {
	switch code {
	case "noSuchThing":
		return fmt.Errorf("looking up %q: %w", "x", errNoSuchThing)
	case "busy":
		return errBusy
	case "lostUpstream":
		return errLostUpstream
	case "plain":
		return errors.New("a plain error")
	case "unimplemented":
		return mp.NotImplemented("Maker.fail")
	case "panic":
		panic("boom")
	}
	return nil
}

type echo struct{}

func (echo) Echo(ctx context.Context, s string) (string, error) { return s, nil }

// callback calls back with depth-1 until 0.
type callback struct{}

func (c *callback) Call(ctx context.Context, depth uint32, back mptestschema.Callback) (uint32, error) {
	if depth == 0 {
		return 0, nil
	}
	return back.Call(ctx, depth-1, c)
}

type sink struct {
	mu    sync.Mutex
	total uint64
	count uint32
	fail  uint32 // push of this value fails
}

func (s *sink) Push(ctx context.Context, n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != 0 && n == s.fail {
		return fmt.Errorf("push %d refused", n)
	}
	s.total += uint64(n)
	s.count++
	return nil
}

func (s *sink) Total(ctx context.Context) (mptestschema.Sink_Total_Results, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mptestschema.Sink_Total_Results{Total: s.total, Count: s.count}, nil
}

func (m *maker) Count(_ context.Context, items []mptestschema.Item) (mptestschema.Maker_Count_Results, error) {
	var sum uint64
	for _, it := range items {
		sum += it.Value
	}
	return mptestschema.Maker_Count_Results{N: uint32(len(items)), Sum: sum}, nil
}
