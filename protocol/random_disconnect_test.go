package protocol_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// cutConn lets through at most a given number of bytes in one direction
// (what this side writes, or what it reads), then closes the socket under
// the RPC connection: the end comes at an exact byte offset of that
// direction's stream, inside a message or between two. It can also record
// what this side writes, to map offsets to messages.
type cutConn struct {
	net.Conn
	cutWrites bool         // the limit is on writes; else on reads
	left      atomic.Int64 // bytes still allowed in the limited direction

	mu      sync.Mutex
	record  bool
	written []byte
}

func newCutConn(nc net.Conn) *cutConn {
	c := &cutConn{Conn: nc}
	c.left.Store(1 << 62)
	return c
}

// take reserves up to n bytes and returns how many may pass.
func (c *cutConn) take(n int) int {
	for {
		left := c.left.Load()
		k := min(int64(n), max(left, 0))
		if c.left.CompareAndSwap(left, left-k) {
			return int(k)
		}
	}
}

func (c *cutConn) Read(p []byte) (int, error) {
	if c.cutWrites {
		return c.Conn.Read(p)
	}
	k := c.take(len(p))
	if k == 0 {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p[:k])
	c.left.Add(int64(n - k)) // give back what was not read
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	k := len(p)
	if c.cutWrites {
		k = c.take(len(p))
	}
	n, err := c.Conn.Write(p[:k])
	if c.record {
		c.mu.Lock()
		c.written = append(c.written, p[:n]...)
		c.mu.Unlock()
	}
	if err == nil && k < len(p) {
		c.Conn.Close()
		err = net.ErrClosed
	}
	return n, err
}

// frameSpan is one message of a recorded stream: its kind and where it
// starts and ends.
type frameSpan struct {
	kind       string
	start, end int64
}

// frameSpans splits a recorded stream into its messages.
func frameSpans(stream []byte) ([]frameSpan, error) {
	var spans []frameSpan
	r := bytes.NewReader(stream)
	dec := capnp.NewDecoder(r)
	for r.Len() > 0 {
		start := int64(len(stream) - r.Len())
		msg, err := dec.Decode()
		if err != nil {
			return nil, fmt.Errorf("decode at %d: %w", start, err)
		}
		kind := "?"
		if m, err := rpccp.ReadRootMessage(msg); err == nil {
			kind = m.Which().String()
		}
		spans = append(spans, frameSpan{kind, start, int64(len(stream) - r.Len())})
	}
	return spans, nil
}

// where names the point at which a stream cut after limit bytes ends:
// inside a message, or between two (before the next).
func where(spans []frameSpan, limit int64) string {
	for _, s := range spans {
		switch {
		case limit == s.start:
			return "before " + s.kind
		case limit < s.end:
			return "inside " + s.kind
		}
	}
	return "after the last message"
}

// socketpairNoT is socketpair for loops of thousands: no t.Cleanup per
// pair; the caller closes both ends (protocol does, owning them).
func socketpairNoT() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("FileConn: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// cut says where one iteration ends the connection: after limit bytes
// in one direction of one side's socket, or after delay, by closing one
// side's socket.
type cut struct {
	server bool          // which side's socket
	writes bool          // the limit counts what that side writes; else reads
	limit  int64         // bytes; -1: cut by delay
	delay  time.Duration // with limit -1
}

func (c cut) String() string {
	side := "client"
	if c.server {
		side = "server"
	}
	if c.limit < 0 {
		return fmt.Sprintf("%s socket closed after %s", side, c.delay)
	}
	dir := "reading"
	if c.writes {
		dir = "writing"
	}
	return fmt.Sprintf("%s socket closed after %s %d bytes", side, dir, c.limit)
}

// sessionResult is what one iteration saw.
type sessionResult struct {
	calls    int // calls that succeeded
	failed   bool
	duration time.Duration
	// What each side wrote, recorded when the session ran with record.
	clientWrote, serverWrote []byte
}

// disconnectSession runs one session (bootstrap, makeEcho with a call
// pipelined on it, Finish and Release, hello, a larger echo) with the
// given cut, and checks that every call either succeeded with the right
// answer or failed with an error wrapping ErrDisconnected; that both
// connections end, Serve with nil or ErrDisconnected; and that every
// cleanup hook ran exactly once.
func disconnectSession(c cut, payload string, record bool) (sessionResult, error) {
	var res sessionResult
	start := time.Now()
	a, b, err := socketpairNoT()
	if err != nil {
		return res, err
	}
	ca, cb := newCutConn(a), newCutConn(b)
	ca.record, cb.record = record, record
	if c.limit >= 0 {
		victim := ca
		if c.server {
			victim = cb
		}
		victim.cutWrites = c.writes
		victim.left.Store(c.limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()

	var serverCleanups, clientCleanups, proxyCleanups atomic.Int32
	served := make(chan error, 1)
	go func() {
		served <- protocol.Serve(ctx, cb, func(conn *protocol.Conn) capnp.Client {
			conn.AddCleanup(func() { serverCleanups.Add(1) })
			return newInit(false)(conn)
		}, nil)
	}()
	conn, proxy, err := protocol.Connect(ctx, ca, nil)
	if err != nil {
		b.Close()
		<-served
		return res, fmt.Errorf("Connect: %w", err)
	}
	conn.AddCleanup(func() { clientCleanups.Add(1) })
	if err := protocol.AddCleanup(proxy, func() { proxyCleanups.Add(1) }); err != nil {
		return res, fmt.Errorf("AddCleanup: %w", err)
	}

	stopTimer := make(chan struct{})
	var timer sync.WaitGroup
	if c.limit < 0 {
		victim := a
		if c.server {
			victim = b
		}
		timer.Add(1)
		go func() {
			defer timer.Done()
			select {
			case <-time.After(c.delay):
				victim.Close()
			case <-stopTimer:
			}
		}()
	}

	var errs []error
	check := func(what, want string, got string, err error) {
		switch {
		case err == nil && got == want:
			res.calls++
		case err == nil:
			errs = append(errs, fmt.Errorf("%s = %q, want %q", what, got, want))
		case errors.Is(err, protocol.ErrDisconnected) && protocol.IsDisconnected(err):
			res.failed = true
		default:
			errs = append(errs, fmt.Errorf("%s: %w, want success or ErrDisconnected", what, err))
		}
	}
	boot := schema.Init(proxy)
	e, releaseEcho := makeEcho(ctx, boot)
	got, err := callEcho(ctx, e, "pipelined")
	check("echo on a pipelined Echo", "pipelined", got, err)
	releaseEcho()
	pid, err := peerHello(ctx, boot)
	check("hello", strconv.Itoa(os.Getpid()), strconv.Itoa(int(pid)), err)
	e, releaseEcho = makeEcho(ctx, boot)
	got, err = callEcho(ctx, e, payload)
	check("larger echo", payload, got, err)
	releaseEcho()
	proxy.Release()
	close(stopTimer)
	timer.Wait()

	conn.Close()
	select {
	case <-conn.Done():
	case <-time.After(patience):
		return res, fmt.Errorf("client connection did not end")
	}
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, protocol.ErrDisconnected) {
			errs = append(errs, fmt.Errorf("Serve = %w, want nil or ErrDisconnected", err))
		}
	case <-time.After(patience):
		return res, fmt.Errorf("Serve did not return")
	}
	for name, n := range map[string]int32{"server Conn": serverCleanups.Load(), "client Conn": clientCleanups.Load(), "proxy": proxyCleanups.Load()} {
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s cleanup ran %d times, want once", name, n))
		}
	}
	if record {
		res.clientWrote, res.serverWrote = ca.written, cb.written
	}
	res.duration = time.Since(start)
	return res, errors.Join(errs...)
}

// 10,000 sessions, each ended at a random point: three in four at a random
// byte of a random message (Bootstrap, Call, Return, Finish, Release) in
// one direction of either side's socket, the others after a random delay
// by closing either side's socket. Nothing panics, races, hangs or leaks: every call
// succeeds or fails with ErrDisconnected, both ends finish, the cleanup
// hooks run once, and goroutines and descriptors come back to where they
// started. PROTOCOL_DISCONNECT_ITERATIONS overrides the count.
func TestDisconnectAtRandomPoints(t *testing.T) {
	iterations := 10000
	if testing.Short() {
		iterations = 1000
	}
	if s := os.Getenv("PROTOCOL_DISCONNECT_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("PROTOCOL_DISCONNECT_ITERATIONS: %v", err)
		}
		iterations = n
	}
	const workers = 4
	payload := strings.Repeat("0123456789abcdef", 64) // a Return of a few segments' worth

	// A whole session, uncut, recorded: its streams size the ranges and
	// tell which message a cut falls in. (Other sessions may send their
	// Finish and Release messages in another order or not at all, when
	// a call fails first: the names are those of this session's layout.) It also warms up what the
	// process keeps (pools, the poller), before the baseline.
	full, err := disconnectSession(cut{limit: -1, delay: time.Hour}, payload, true)
	if err != nil || full.failed || full.calls != 3 {
		t.Fatalf("uncut session: %+v, %v", full, err)
	}
	clientSpans, err := frameSpans(full.clientWrote)
	if err != nil {
		t.Fatalf("client's stream: %v", err)
	}
	serverSpans, err := frameSpans(full.serverWrote)
	if err != nil {
		t.Fatalf("server's stream: %v", err)
	}
	// Once more, warm, for the time a session takes.
	if full, err = disconnectSession(cut{limit: -1, delay: time.Hour}, payload, false); err != nil || full.calls != 3 {
		t.Fatalf("uncut session: %+v, %v", full, err)
	}
	goroutines0 := runtime.NumGoroutine()
	fds0 := fdcheck.Count(t)

	var (
		next    atomic.Int64
		mu      sync.Mutex
		errs    []string
		byCalls [4]int         // sessions by how many calls succeeded
		byPoint map[string]int // byte-offset cuts by where they fell
		wg      sync.WaitGroup
	)
	byPoint = make(map[string]int)
	maxDelay := 2 * full.duration
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				i := next.Add(1)
				if i > int64(iterations) {
					return
				}
				c := cut{server: rng.IntN(2) == 0, writes: rng.IntN(2) == 0, limit: -1}
				point := ""
				if rng.IntN(4) != 0 { // three in four by byte offset
					// The stream that the cut direction carries: what
					// the side writes, or what the other side writes.
					spans := clientSpans
					if c.server == c.writes {
						spans = serverSpans
					}
					// A message at random, then a byte of it: every
					// kind of message gets cut, however small.
					if k := rng.IntN(len(spans) + 1); k < len(spans) {
						c.limit = spans[k].start + rng.Int64N(spans[k].end-spans[k].start)
					} else {
						c.limit = spans[len(spans)-1].end
					}
					point = where(spans, c.limit)
				} else {
					c.delay = time.Duration(rng.Int64N(int64(maxDelay) + 1))
				}
				res, err := disconnectSession(c, payload, false)
				mu.Lock()
				if err != nil {
					if len(errs) < 10 {
						errs = append(errs, fmt.Sprintf("iteration %d, %v (%s): %v", i, c, point, err))
					}
				} else {
					byCalls[res.calls]++
					if point != "" {
						byPoint[point]++
					}
				}
				stop := len(errs) >= 10
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for _, e := range errs {
		t.Error(e)
	}
	points := make([]string, 0, len(byPoint))
	for p, n := range byPoint {
		points = append(points, fmt.Sprintf("%s %d", p, n))
	}
	slices.Sort(points)
	t.Logf("%d sessions in %s with %d workers; an uncut session: %d messages, %d bytes from the client, %d messages, %d bytes from the server, %s",
		iterations, took.Round(time.Millisecond), workers, len(clientSpans), clientSpans[len(clientSpans)-1].end,
		len(serverSpans), serverSpans[len(serverSpans)-1].end, full.duration.Round(time.Microsecond))
	t.Logf("sessions by calls that succeeded (0-3): %v; byte-offset cuts by where they fell: %s", byCalls, strings.Join(points, ", "))
	for _, kind := range []string{"bootstrap", "call", "return", "finish", "release"} {
		if byPoint["inside "+kind] == 0 && iterations >= 1000 {
			t.Errorf("no cut fell inside a %s message", kind)
		}
	}

	deadline := time.Now().Add(patience)
	for {
		g, f := runtime.NumGoroutine(), fdcheck.Count(t)
		if g <= goroutines0 && f <= fds0 {
			t.Logf("goroutines %d -> %d, descriptors %d -> %d", goroutines0, g, fds0, f)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after the sessions: %d goroutines (%d before), %d descriptors (%d before)\n%s",
				g, goroutines0, f, fds0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
