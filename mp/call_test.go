package mp_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
)

func TestEchoAcrossConnection(t *testing.T) {
	p := newPair(t, &maker{}, nil)
	ctx := testCtx(t)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	if _, ok := e.(*mptestschema.EchoClient); !ok {
		t.Fatalf("MakeEcho across a connection returned %T, want a proxy", e)
	}
	for _, s := range []string{"", "hello", strings.Repeat("x", 100000)} {
		got, err := e.Echo(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if got != s {
			t.Fatalf("echo of %d bytes returned %d bytes", len(s), len(got))
		}
	}
}

// The same implementation gives the same results in one process (a
// direct Go call) and across a connection.
func TestLocalAndRemoteAgree(t *testing.T) {
	ctx := testCtx(t)
	local := mptestschema.Maker(&maker{})
	p := newPair(t, &maker{}, nil)
	for _, m := range []mptestschema.Maker{local, p.maker} {
		e, err := m.MakeEcho(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Echo(ctx, "same")
		mp.Release(e)
		if err != nil || got != "same" {
			t.Fatalf("%T: echo = %q, %v", m, got, err)
		}
		cb, err := m.Callback(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d, err := cb.Call(ctx, 5, &callback{})
		mp.Release(cb)
		if err != nil || d != 0 {
			t.Fatalf("%T: callback = %d, %v", m, d, err)
		}
	}
}

// A local value passed to the peer and back is the value itself again,
// and a local value passed to a local value is not wrapped at all.
func TestLocalValueComesBack(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	mine := &echoPtr{}
	back, err := p.maker.Identity(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	if back != mptestschema.Echo(mine) {
		t.Fatalf("identity across a connection returned %T %p, want the value passed (%p)", back, back, mine)
	}
	// A proxy passed back to its owner: the peer gets its own value,
	// and we get a proxy again (the peer's value, not ours).
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	again, err := p.maker.Identity(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(again)
	if got, err := again.Echo(ctx, "x"); err != nil || got != "x" {
		t.Fatalf("echo on a proxy passed back = %q, %v", got, err)
	}
}

type echoPtr struct{ echo }

func TestDeclaredErrorsCrossTheConnection(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	for _, m := range []mptestschema.Maker{&maker{}, p.maker} {
		err := m.Fail(ctx, "noSuchThing")
		if !errors.Is(err, errNoSuchThing) {
			t.Errorf("%T: Fail(noSuchThing) = %v, want errors.Is errNoSuchThing", m, err)
		}
		if !strings.Contains(err.Error(), `looking up "x": no such thing`) {
			t.Errorf("%T: Fail(noSuchThing) text = %q", m, err)
		}
		err = m.Fail(ctx, "busy")
		if !errors.Is(err, errBusy) || errors.Is(err, errNoSuchThing) {
			t.Errorf("%T: Fail(busy) = %v", m, err)
		}
		err = m.Fail(ctx, "unimplemented")
		if !errors.Is(err, mp.ErrUnimplemented) {
			t.Errorf("%T: Fail(unimplemented) = %v, want ErrUnimplemented", m, err)
		}
		err = m.Fail(ctx, "plain")
		if err == nil || errors.Is(err, errNoSuchThing) || errors.Is(err, mp.ErrDisconnected) {
			t.Errorf("%T: Fail(plain) = %v", m, err)
		}
	}
	var re *mp.RemoteError
	if err := p.maker.Fail(ctx, "busy"); !errors.As(err, &re) || re.Type != mp.Overloaded || re.Code != "mptest.busy" {
		t.Fatalf("remote Fail(busy) = %#v, want a RemoteError of type overloaded with its code", err)
	}
	if err := p.maker.Fail(ctx, "none"); err != nil {
		t.Fatal(err)
	}
}

func TestDisconnectIsErrDisconnected(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	p.server.Close()
	<-p.server.Done()
	if _, err := e.Echo(ctx, "x"); !errors.Is(err, mp.ErrDisconnected) {
		t.Fatalf("echo after the server closed = %v, want ErrDisconnected", err)
	}
	if err := p.maker.Fail(ctx, "none"); !errors.Is(err, mp.ErrDisconnected) {
		t.Fatalf("call after the server closed = %v, want ErrDisconnected", err)
	}
}

func TestCallOnClosedProxy(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mp.Release(e)
	mp.Release(e) // idempotent
	if _, err := e.Echo(ctx, "x"); !errors.Is(err, mp.ErrClosed) {
		t.Fatalf("echo after Close = %v, want ErrClosed", err)
	}
}

func TestCallbacksBothWays(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	cb, err := p.maker.Callback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(cb)
	for _, depth := range []uint32{0, 1, 2, 7, 20} {
		d, err := cb.Call(ctx, depth, &callback{})
		if err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if d != 0 {
			t.Fatalf("depth %d: returned %d", depth, d)
		}
	}
}

func TestPanicFailsTheCallAndClosesTheConnection(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	// The connection closes as the call fails: the caller sees either.
	err := p.maker.Fail(ctx, "panic")
	if err == nil || !(strings.Contains(err.Error(), "internal error (panic)") || errors.Is(err, mp.ErrDisconnected)) {
		t.Fatalf("Fail(panic) = %v", err)
	}
	<-p.server.Done()
}

// One capability answers two interfaces, told apart by type ID; a peer
// that does not know the second answers "unimplemented".
func TestServeWithFacets(t *testing.T) {
	ctx := testCtx(t)
	a, b := socketPair(t)
	boot := mptestschema.MakerInterface.ServeWith(&maker{}, mptestschema.EchoInterface.Facet(echo{}))
	server := rpcconn.NewConn(a, &rpcconn.Options{BootstrapClient: boot})
	client := rpcconn.NewConn(b, nil)
	defer func() {
		client.Close()
		server.Close()
		<-client.Done()
		<-server.Done()
	}()
	cl := client.Bootstrap(context.Background())
	m := mptestschema.MakerInterface.FromCapnp(cl.AddRef())
	e := mptestschema.EchoInterface.FromCapnp(cl.AddRef())
	cb := mptestschema.CallbackInterface.FromCapnp(cl)
	defer mp.Release(m)
	defer mp.Release(e)
	defer mp.Release(cb)
	if err := m.Fail(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if got, err := e.Echo(ctx, "facet"); err != nil || got != "facet" {
		t.Fatalf("echo on the facet = %q, %v", got, err)
	}
	if _, err := cb.Call(ctx, 0, nil); !errors.Is(err, mp.ErrUnimplemented) {
		t.Fatalf("call of an interface the capability does not answer = %v, want ErrUnimplemented", err)
	}
}

// A call canceled by its context fails with the context's error, and the
// method's own context ends, across the connection.
func TestCancelByContext(t *testing.T) {
	ctx := testCtx(t)
	started := make(chan struct{})
	ended := make(chan error, 1)
	p := newPair(t, &echoMaker{e: &blockingEcho{started: started, ended: ended}}, nil)
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(e)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := e.Echo(cctx, "wait")
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call = %v, want context.Canceled", err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the method's context did not end")
		}
	case <-ctx.Done():
		t.Fatal("the method never saw the cancellation")
	}
	// The connection carries on.
	if err := p.maker.Fail(ctx, ""); err != nil {
		t.Fatal(err)
	}
}

// blockingEcho's Echo waits for its context to end.
type blockingEcho struct {
	started chan struct{}
	ended   chan error
}

func (b *blockingEcho) Echo(ctx context.Context, _ string) (string, error) {
	close(b.started)
	<-ctx.Done()
	b.ended <- ctx.Err()
	return "", ctx.Err()
}

// A `disconnected` exception that a method returns, relaying a loss
// further away, keeps its type but is not this connection's end.
func TestRelayedDisconnectedIsNotOurs(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	err := p.maker.Fail(ctx, "lostUpstream")
	var re *mp.RemoteError
	if !errors.As(err, &re) || re.Type != mp.Disconnected {
		t.Fatalf("relayed loss = %#v, want a RemoteError of type disconnected", err)
	}
	if errors.Is(err, mp.ErrDisconnected) {
		t.Fatal("a relayed disconnected exception matched ErrDisconnected")
	}
	if !errors.Is(err, errLostUpstream) {
		t.Fatal("the declared error was lost")
	}
	if err := p.maker.Fail(ctx, ""); err != nil {
		t.Fatalf("the connection ended: %v", err)
	}
}
