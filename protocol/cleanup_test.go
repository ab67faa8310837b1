package protocol_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// counter counts how often a cleanup ran.
type counter struct{ n atomic.Int32 }

func (c *counter) inc()       { c.n.Add(1) }
func (c *counter) get() int32 { return c.n.Load() }

// expectOnce waits for c to reach one, then checks that it stays there.
func expectOnce(t *testing.T, what string, c *counter) {
	t.Helper()
	eventually(t, what, func() bool { return c.get() >= 1 })
	time.Sleep(settle)
	if n := c.get(); n != 1 {
		t.Errorf("%s ran %d times, want once", what, n)
	}
}

// session connects a client to a server serving schema.Init and returns
// the client's Conn and proxy, and the server's Conn.
func session(t *testing.T) (*protocol.Conn, capnp.Client, *protocol.Conn) {
	t.Helper()
	a, b := socketpair(t)
	servers := make(chan *protocol.Conn, 1)
	serve(t, testContext(t), b, func(c *protocol.Conn) capnp.Client {
		servers <- c
		return newInit(false)(c)
	}, nil)
	conn, proxy := connect(t, a, nil)
	// The factory runs when the server's connection starts; use the
	// proxy once so the server side surely exists.
	if _, err := callEcho(testContext(t), schema.Echo(proxyEcho(t, proxy)), "x"); err != nil {
		t.Fatalf("echo: %v", err)
	}
	return conn, proxy, <-servers
}

func proxyEcho(t *testing.T, proxy capnp.Client) capnp.Client {
	t.Helper()
	e, release := makeEcho(testContext(t), schema.Init(proxy))
	c := capnp.Client(e).AddRef()
	release()
	t.Cleanup(c.Release)
	return c
}

func TestProxyCleanupOnRelease(t *testing.T) {
	conn, proxy, _ := session(t)
	var first, second counter
	if err := protocol.AddCleanup(proxy, first.inc); err != nil {
		t.Fatalf("AddCleanup: %v", err)
	}
	ref := proxy.AddRef()
	if err := protocol.AddCleanup(ref, second.inc); err != nil {
		t.Fatalf("AddCleanup on an AddRef: %v", err)
	}

	proxy.Release()
	time.Sleep(settle)
	if first.get() != 0 || second.get() != 0 {
		t.Fatalf("cleanups ran while a reference remained")
	}
	ref.Release()
	expectOnce(t, "first cleanup", &first)
	expectOnce(t, "second cleanup", &second)

	conn.Close()
	// Done waits for every cleanup the connection runs or started.
	waitDone(t, "client Done", conn.Done())
	if first.get() != 1 || second.get() != 1 {
		t.Errorf("cleanups ran again when the connection ended: %d, %d", first.get(), second.get())
	}

	// Once the proxy is gone it is no proxy any more.
	if err := protocol.AddCleanup(ref, func() {}); err == nil {
		t.Errorf("AddCleanup on a released proxy succeeded")
	}
}

func TestProxyCleanupOnConnectionLoss(t *testing.T) {
	conn, proxy, server := session(t)
	var c counter
	if err := protocol.AddCleanup(proxy, c.inc); err != nil {
		t.Fatalf("AddCleanup: %v", err)
	}
	server.Close()
	expectOnce(t, "cleanup", &c)
	waitDone(t, "client Done", conn.Done())

	// Registered after the loss, a cleanup runs at once.
	late := make(chan struct{})
	if err := protocol.AddCleanup(proxy, func() { close(late) }); err != nil {
		t.Fatalf("AddCleanup after the loss: %v", err)
	}
	waitDone(t, "late cleanup", late)

	proxy.Release()
	time.Sleep(settle)
	if n := c.get(); n != 1 {
		t.Errorf("cleanup ran %d times after Release too, want once", n)
	}
}

func TestProxyCleanupOnReleaseAndLoss(t *testing.T) {
	for i := 0; i < 10; i++ {
		conn, proxy, server := session(t)
		var c counter
		if err := protocol.AddCleanup(proxy, c.inc); err != nil {
			t.Fatalf("AddCleanup: %v", err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); proxy.Release() }()
		go func() { defer wg.Done(); server.Close() }()
		wg.Wait()
		waitDone(t, "client Done", conn.Done())
		eventually(t, "cleanup", func() bool { return c.get() >= 1 })
		if n := c.get(); n != 1 {
			t.Fatalf("round %d: cleanup ran %d times, want once", i, n)
		}
	}
}

func TestAddCleanupNeedsProxy(t *testing.T) {
	e := echoServer{}
	local := protocol.NewServer(schema.Echo_Methods(nil, e), e, nil)
	defer local.Release()
	if err := protocol.AddCleanup(local, func() {}); err == nil {
		t.Errorf("AddCleanup on a local server succeeded")
	}
	if err := protocol.AddCleanup(capnp.Client{}, func() {}); err == nil {
		t.Errorf("AddCleanup on the null client succeeded")
	}
}

func TestConnCleanup(t *testing.T) {
	conn, _, server := session(t)
	var order []string
	var mu sync.Mutex
	add := func(s string) func() {
		return func() { mu.Lock(); order = append(order, s); mu.Unlock() }
	}
	conn.AddCleanup(add("first"))
	conn.AddCleanup(add("second"))
	var onServer counter
	server.AddCleanup(onServer.inc)

	conn.Close()
	waitDone(t, "client Done", conn.Done())
	mu.Lock()
	if len(order) != 2 || order[0] != "second" || order[1] != "first" {
		t.Errorf("cleanups ran as %q, want [second first]", order)
	}
	mu.Unlock()
	waitDone(t, "server Done", server.Done())
	if n := onServer.get(); n != 1 {
		t.Errorf("server cleanup ran %d times before Done, want once", n)
	}

	late := make(chan struct{})
	conn.AddCleanup(func() { close(late) })
	waitDone(t, "cleanup added after the end", late)
}
