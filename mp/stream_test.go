package mp_test

import (
	"context"
	"hash/crc64"
	"net"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
)

// countingConn counts the writes to a net.Conn and the bytes written. It
// hides the conn's descriptor (it is no syscall.Conn), so that the
// connection writes every message through Write.
type countingConn struct {
	net.Conn
	writes, bytes atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

// slowBlob is a blob whose first pushData waits until release is closed,
// so that the stream's calls queue up behind it.
type slowBlob struct {
	blob
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *slowBlob) PushData(ctx context.Context, data []byte) error {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.blob.PushData(ctx, data)
}

func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStreamBatching: a stream of small calls goes out in a few large
// writes, not one write per call, and so do their Returns; every call
// arrives, in order, once.
func TestStreamBatching(t *testing.T) {
	ctx := testCtx(t)
	impl := &slowBlob{entered: make(chan struct{}), release: make(chan struct{})}
	var client, server *countingConn
	a, b := socketPair(t)
	client, server = &countingConn{Conn: b}, &countingConn{Conn: a}
	p, sconn, cconn := newBlobConns(t, impl, server, client)
	const n = 20000
	payload := make([]byte, 64)
	var want uint64
	var sent atomic.Int64
	pushed := make(chan error, 1)
	go func() {
		for i := range n {
			payload[0], payload[1] = byte(i), byte(i>>8)
			want = crc64.Update(want, crcTable, payload)
			if err := p.PushData(ctx, payload); err != nil {
				pushed <- err
				return
			}
			sent.Add(1)
		}
		pushed <- mp.Flush(ctx, p)
	}()
	<-impl.entered
	// The first call holds the object: the others queue behind it, as
	// many as the stream window lets the caller send, and go out in a
	// few writes.
	window := int64(rpcconn.DirectStreamWindow)
	deadline := time.Now().Add(10 * time.Second)
	for sent.Load() < window && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	// How many go out at once depends on how fast the caller queues
	// them and the writer takes them (in one process, under the race
	// detector, on a loaded machine): 3 to 100 per write were seen.
	if w := client.writes.Load(); w > window/2 {
		t.Errorf("%d writes for the %d calls of a full window, want at most %d", w, window, window/2)
	}
	// They are then served one after the other by the goroutine that
	// served the first.
	created := goroutinesCreated()
	close(impl.release)
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	perCall := float64(goroutinesCreated()-created) / n
	sum, err := p.Sum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Count != n || sum.Bytes != n*64 || sum.Digest != want {
		t.Fatalf("the server got %d calls, %d bytes, digest %x: want %d, %d, %x", sum.Count, sum.Bytes, sum.Digest, n, n*64, want)
	}
	cw, sw := float64(client.writes.Load())/n, float64(server.writes.Load())/n
	t.Logf("per streamed call: %.4f writes by the caller (%.0f bytes each), %.4f by the server (%.0f bytes each), %.4f goroutines started",
		cw, float64(client.bytes.Load())/float64(client.writes.Load()), sw, float64(server.bytes.Load())/float64(server.writes.Load()), perCall)
	if cw > 0.5 {
		t.Errorf("%.3f writes per streamed call by the caller, want at most 0.5 (batched)", cw)
	}
	if sw > 0.1 {
		t.Errorf("%.3f writes per streamed call by the server (its Returns), want at most 0.1 (batched)", sw)
	}
	if perCall > 0.05 {
		t.Errorf("%.3f goroutines started per streamed call, want about none (queued calls run one after the other)", perCall)
	}
	// The server reads each call after the first from the template of
	// the one before; the caller takes the Returns that came in one
	// read behind the first without making a message for each.
	ss, cs := sconn.RoleStats(), cconn.RoleStats()
	t.Logf("calls read from the template: %d; bare Returns read behind another: %d", ss.Templated, cs.BareRead)
	// (Under the race detector a few dozen are not: messages built
	// otherwise, as when a pooled buffer was not reused.)
	if ss.Templated < n*9/10 {
		t.Errorf("%d of %d calls read from the template, want at least %d", ss.Templated, n, n*9/10)
	}
	if cs.BareRead < n/2 {
		t.Errorf("%d of %d Returns read behind another from the buffer, want at least %d", cs.BareRead, n, n/2)
	}
}

// BenchmarkStreamPush streams 64-byte pushes through a generated proxy
// to a server in this process, on a socketpair, and waits for them at
// the end; ns/op is both sides' work per message on two cores.
func BenchmarkStreamPush(b *testing.B) {
	ctx := context.Background()
	p := newBlobPair(b, &blob{}, nil)
	payload := make([]byte, 64)
	if err := p.PushData(ctx, payload); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := p.PushData(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, p); err != nil {
		b.Fatal(err)
	}
}

// TestStreamSidesWorkAtOnce: a stream's sender writes its queued calls
// itself, 8 KiB at a time, rather than leave them to the writer
// goroutine it woke, which waits behind it on its processor; and the
// receiver answers at most 64 calls at a time while more are in, rather
// than the hundreds its read buffer holds, so that the sender learns
// early that its window has room. With one processor neither happens by
// chance: the woken writer runs only once the sender waits, and the
// receiver reads every call the window let through at once.
func TestStreamSidesWorkAtOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx := testCtx(t)
	a, b := socketPair(t)
	p, sconn, cconn := newBlobConns(t, &blob{}, a, b)
	const n = 20000
	payload := make([]byte, 64)
	var want uint64
	for i := range n {
		payload[0], payload[1] = byte(i), byte(i>>8)
		want = crc64.Update(want, crcTable, payload)
		if err := p.PushData(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, p); err != nil {
		t.Fatal(err)
	}
	sum, err := p.Sum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Count != n || sum.Digest != want {
		t.Fatalf("the server got %d calls, digest %x: want %d, %x", sum.Count, sum.Digest, n, want)
	}
	cs, ss := cconn.RoleStats(), sconn.RoleStats()
	t.Logf("sender's own writes: %d; Returns written after 64 calls with more in: %d", cs.SenderFlush, ss.CappedFlush)
	// 20000 calls of about 180 bytes are 3.6 MB, some 440 times 8 KiB.
	if cs.SenderFlush < 50 {
		t.Errorf("the sender wrote its queued calls itself %d times, want at least 50", cs.SenderFlush)
	}
	if ss.CappedFlush < 10 {
		t.Errorf("the receiver wrote held Returns with more calls in %d times, want at least 10", ss.CappedFlush)
	}
}
