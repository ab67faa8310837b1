package mp_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc64"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gomultiprocess/multiprocess/internal/mptestschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
)

// blob implements Blob.
type blob struct {
	mu                   sync.Mutex
	count, bytes, digest uint64
	got                  chan uint64 // if set, gets the checksum of each echoData argument
}

var crcTable = crc64.MakeTable(crc64.ECMA)

func (b *blob) EchoData(_ context.Context, data []byte) ([]byte, error) {
	if b.got != nil {
		b.got <- crc64.Checksum(data, crcTable)
	}
	return data, nil
}

func (b *blob) EchoText(_ context.Context, text string) (string, error) { return text, nil }

func (b *blob) CopyData(_ context.Context, data []byte) ([]byte, error) {
	return bytes.Clone(data), nil
}

func (b *blob) PushData(_ context.Context, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.count++
	b.bytes += uint64(len(data))
	b.digest = crc64.Update(b.digest, crcTable, data)
	return nil
}

func (b *blob) Sum(context.Context) (mptestschema.Blob_Sum_Results, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return mptestschema.Blob_Sum_Results{Count: b.count, Bytes: b.bytes, Digest: b.digest}, nil
}

// newBlobPair serves impl on one end of a socketpair and returns a proxy
// for it on the other. wrap, if set, wraps the server's end.
func newBlobPair(t testing.TB, impl mptestschema.Blob, wrap func(net.Conn) io.ReadWriteCloser) mptestschema.Blob {
	t.Helper()
	a, b := socketPair(t)
	var srw io.ReadWriteCloser = a
	if wrap != nil {
		srw = wrap(a)
	}
	p, _, _ := newBlobConns(t, impl, srw, b)
	return p
}

// newBlobConns serves impl on the connection on srw and returns a proxy
// for it on the connection on crw, and both connections.
func newBlobConns(t testing.TB, impl mptestschema.Blob, srw, crw io.ReadWriteCloser) (mptestschema.Blob, *rpcconn.Conn, *rpcconn.Conn) {
	t.Helper()
	server := rpcconn.NewConn(srw, &rpcconn.Options{BootstrapClient: mptestschema.BlobInterface.Capnp(impl)})
	client := rpcconn.NewConn(crw, nil)
	p := mptestschema.BlobInterface.FromCapnp(client.Bootstrap(context.Background()))
	t.Cleanup(func() {
		mp.Release(p)
		client.Close()
		server.Close()
		<-client.Done()
		<-server.Done()
	})
	return p, server, client
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// TestLendAndBorrow: large Data and Text cross in both directions,
// lent, borrowed or copied, with the bytes intact, and sizes around the
// lending threshold and the word boundary.
func TestLendAndBorrow(t *testing.T) {
	ctx := testCtx(t)
	p := newBlobPair(t, &blob{}, nil)
	for _, n := range []int{0, 1, 4 << 10, mp.MinLend - 1, mp.MinLend, mp.MinLend + 3, 1 << 20, 3<<20 + 5} {
		data := pattern(n, byte(n))
		for _, mode := range []string{"plain", "lend", "borrow", "both"} {
			cctx, release := ctx, func() {}
			if mode == "lend" || mode == "both" {
				cctx = mp.Lend(cctx)
			}
			if mode == "borrow" || mode == "both" {
				cctx, release = mp.Borrow(cctx)
			}
			got, err := p.EchoData(cctx, data)
			if err != nil {
				t.Fatalf("%d bytes, %s: EchoData: %v", n, mode, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %s: EchoData returned other bytes", n, mode)
			}
			got, err = p.CopyData(cctx, data)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %s: CopyData: %v, equal %v", n, mode, err, bytes.Equal(got, data))
			}
			text, err := p.EchoText(cctx, string(data))
			if err != nil || text != string(data) {
				t.Fatalf("%d bytes, %s: EchoText: %v, equal %v", n, mode, err, text == string(data))
			}
			release()
			release() // idempotent
		}
	}
	// Calls under a Borrow context after its release copy.
	cctx, release := mp.Borrow(ctx)
	release()
	data := pattern(1<<20, 9)
	got, err := p.EchoData(cctx, data)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after release: %v", err)
	}
}

// TestTextSentInPlace: a large Text is written from the string's own
// bytes, both ways: the caller's argument, and the result a method
// returns (here the string it was given, itself made over the frame it
// arrived in). A small one is copied into the message.
func TestTextSentInPlace(t *testing.T) {
	var mu sync.Mutex
	var segs [][]byte
	restore := rpcconn.SetTestSegmentWrite(func(b []byte) {
		mu.Lock()
		segs = append(segs, b)
		mu.Unlock()
	})
	defer restore()
	ctx := testCtx(t)
	k := &keepText{}
	p := newBlobPair(t, k, nil)
	for _, n := range []int{mp.MinLend - 1, 1 << 20} {
		mu.Lock()
		segs = nil
		mu.Unlock()
		text := string(pattern(n, 3))
		got, err := p.EchoText(ctx, text)
		if err != nil || got != text {
			t.Fatalf("%d bytes: %v, equal %v", n, err, got == text)
		}
		k.mu.Lock()
		arg := k.kept[len(k.kept)-1]
		k.mu.Unlock()
		mu.Lock()
		var fromArg, fromResult int
		for _, b := range segs {
			switch unsafe.SliceData(b) {
			case unsafe.StringData(text):
				fromArg += len(b)
			case unsafe.StringData(arg):
				fromResult += len(b)
			}
		}
		mu.Unlock()
		want := n
		if n < mp.MinLend {
			want = 0
		}
		if fromArg != want || fromResult != want {
			t.Errorf("%d bytes: %d written from the caller's string, %d from the method's result, want %d each", n, fromArg, fromResult, want)
		}
	}
}

// keepText is a Blob whose EchoText keeps every argument it gets.
type keepText struct {
	blob
	mu   sync.Mutex
	kept []string
}

func (k *keepText) EchoText(_ context.Context, text string) (string, error) {
	k.mu.Lock()
	k.kept = append(k.kept, text)
	k.mu.Unlock()
	return text, nil
}

// TestReceivedTextShared: a large Text, parameter or result, reaches Go
// code as a string made over the received frame's own buffer (no copy),
// and keeps its bytes for as long as it is held, while the connections
// go on reading other frames of the same size (Data in between, whose
// buffers go back to the pools) and, under the race detector, poison
// every buffer released. A small Text is copied.
func TestReceivedTextShared(t *testing.T) {
	var mu sync.Mutex
	shared := map[*byte]bool{}
	restore := rpcconn.SetTestTextShared(func(s string) {
		mu.Lock()
		shared[unsafe.StringData(s)] = true
		mu.Unlock()
	})
	defer restore()
	ctx := testCtx(t)
	k := &keepText{}
	p := newBlobPair(t, k, nil)
	var want, got []string
	for i := range 6 {
		n := 1<<20 + i
		if i == 5 {
			n = 4 << 10
		}
		text := string(pattern(n, byte(i)))
		r, err := p.EchoText(ctx, text)
		if err != nil || r != text {
			t.Fatalf("call %d: %v, equal %v", i, err, r == text)
		}
		want, got = append(want, text), append(got, r)
		data := pattern(n, byte(100+i))
		if r, err := p.EchoData(ctx, data); err != nil || !bytes.Equal(r, data) {
			t.Fatalf("call %d: EchoData: %v", i, err)
		}
	}
	runtime.GC()
	k.mu.Lock()
	defer k.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if got[i] != want[i] || k.kept[i] != want[i] {
			t.Errorf("call %d: a string changed after later calls: result %v, argument %v", i, got[i] == want[i], k.kept[i] == want[i])
		}
		small := len(want[i]) < mp.MinLend
		if shared[unsafe.StringData(got[i])] == small || shared[unsafe.StringData(k.kept[i])] == small {
			t.Errorf("call %d, %d bytes: result shared %v, argument shared %v, want %v", i, len(want[i]),
				shared[unsafe.StringData(got[i])], shared[unsafe.StringData(k.kept[i])], !small)
		}
	}
}

// TestLentBytesSentInPlace: a lent slice is handed to write(2) from where
// it is (no copy into the message); without Lend it is copied.
func TestLentBytesSentInPlace(t *testing.T) {
	ctx := testCtx(t)
	p := newBlobPair(t, &blob{}, nil)
	data := pattern(1<<20, 1)
	var mu sync.Mutex
	var pieces [][]byte
	restore := rpcconn.SetTestLentWrite(func(b []byte) {
		mu.Lock()
		pieces = append(pieces, b)
		mu.Unlock()
	})
	defer restore()
	for _, lend := range []bool{false, true} {
		mu.Lock()
		pieces = nil
		mu.Unlock()
		cctx := ctx
		if lend {
			cctx = mp.Lend(ctx)
		}
		got, err := p.EchoData(cctx, data)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("lend %v: %v", lend, err)
		}
		mu.Lock()
		var sent int
		for _, b := range pieces {
			if !within(b, data) {
				t.Fatalf("lend %v: a lent piece lies outside the caller's slice", lend)
			}
			sent += len(b)
		}
		mu.Unlock()
		if lend && sent < len(data) {
			t.Errorf("lent: %d bytes handed to write(2) from the caller's slice, want %d or more", sent, len(data))
		}
		if !lend && sent != 0 {
			t.Errorf("not lent: %d bytes written from the caller's slice", sent)
		}
	}
}

func within(b, in []byte) bool {
	if len(b) == 0 {
		return true
	}
	for i := range in {
		if &in[i] == &b[0] {
			return i+len(b) <= len(in)
		}
	}
	return false
}

// TestBorrowAvoidsCopies: with Lend and Borrow on the caller's side and
// the echo's result sent from its parameters, a 1 MiB round trip
// allocates a small fraction of its size (received messages are read
// into pooled buffers); plain calls allocate the results the caller
// owns.
func TestBorrowAvoidsCopies(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's poisoning of released buffers allocates")
	}
	ctx := testCtx(t)
	p := newBlobPair(t, &blob{}, nil)
	data := pattern(1<<20, 2)
	perCall := func(lend bool) uint64 {
		const n = 50
		var before, after runtime.MemStats
		for i := 0; i < n+5; i++ {
			if i == 5 {
				runtime.ReadMemStats(&before)
			}
			cctx, release := ctx, func() {}
			if lend {
				cctx, release = mp.Borrow(mp.Lend(ctx))
			}
			got, err := p.EchoData(cctx, data)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatal(err)
			}
			release()
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / n
	}
	plain, lent := perCall(false), perCall(true)
	t.Logf("bytes allocated per 1 MiB echo: plain %d, lent and borrowed %d", plain, lent)
	if plain < 1<<20 {
		t.Errorf("plain: %d bytes allocated per call, want the result's 1 MiB at least", plain)
	}
	if lent > 64<<10 {
		t.Errorf("lent and borrowed: %d bytes allocated per call, want under 64 KiB", lent)
	}
}

// gatedConn holds up reads while it is shut (a read already waiting for
// bytes may still return some).
type gatedConn struct {
	net.Conn
	mu   sync.Mutex
	shut bool
	open chan struct{} // closed when the gate opens again
}

func (g *gatedConn) Read(b []byte) (int, error) {
	g.mu.Lock()
	shut, open := g.shut, g.open
	g.mu.Unlock()
	if shut {
		<-open
	}
	return g.Conn.Read(b)
}

func (g *gatedConn) setShut(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if shut && !g.shut {
		g.open = make(chan struct{})
	} else if !shut && g.shut {
		close(g.open)
	}
	g.shut = shut
}

// TestLendCanceledMidWrite: a call whose lent bytes are still being
// written when its ctx ends returns promptly, and the caller may then
// change its bytes: the peer gets what was lent, all of it.
func TestLendCanceledMidWrite(t *testing.T) {
	ctx := testCtx(t)
	impl := &blob{got: make(chan uint64, 2)}
	var gate *gatedConn
	p := newBlobPair(t, impl, func(c net.Conn) io.ReadWriteCloser {
		gate = &gatedConn{Conn: c}
		return gate
	})
	// The bootstrap capability is resolved (calls go straight to it).
	if _, err := p.EchoData(ctx, []byte("warm-up")); err != nil {
		t.Fatal(err)
	}
	<-impl.got
	var lent int
	var mu sync.Mutex
	defer rpcconn.SetTestLentWrite(func(b []byte) {
		mu.Lock()
		lent += len(b)
		mu.Unlock()
	})()
	gate.setShut(true)
	data := pattern(8<<20, 3) // far more than the socket holds
	want := crc64.Checksum(data, crcTable)
	cctx, cancel := context.WithCancel(mp.Lend(ctx))
	errc := make(chan error, 1)
	go func() {
		_, err := p.EchoData(cctx, data)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // the writer fills the socket and waits
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("EchoData: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the canceled call did not return while its bytes were being written")
	}
	mu.Lock()
	if lent == 0 || lent >= len(data) {
		t.Errorf("%d bytes written from the lent slice when the call returned: want some, not all", lent)
	}
	mu.Unlock()
	for i := range data {
		data[i] = 0xff
	}
	gate.setShut(false)
	select {
	case got := <-impl.got:
		if got != want {
			t.Fatal("the peer got bytes the caller changed after the call returned")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the peer")
	}
}

// BenchmarkBlob1MiB is a 1 MiB round trip through a generated proxy and
// server in this process, on a socketpair: Text (strings both ways),
// Data copied, and Data lent and borrowed.
func BenchmarkBlob1MiB(b *testing.B) {
	ctx := context.Background()
	p := newBlobPair(b, &blob{}, nil)
	data := pattern(1<<20, 5)
	text := string(data)
	if _, err := p.EchoText(ctx, "warm-up"); err != nil {
		b.Fatal(err)
	}
	b.Run("text", func(b *testing.B) {
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		for b.Loop() {
			if got, err := p.EchoText(ctx, text); err != nil || len(got) != len(text) {
				b.Fatal(err)
			}
		}
	})
	b.Run("data", func(b *testing.B) {
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		for b.Loop() {
			if got, err := p.EchoData(ctx, data); err != nil || len(got) != len(data) {
				b.Fatal(err)
			}
		}
	})
	b.Run("lent", func(b *testing.B) {
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		lend := mp.Lend(ctx)
		for b.Loop() {
			cctx, release := mp.Borrow(lend)
			got, err := p.EchoData(cctx, data)
			if err != nil || len(got) != len(data) {
				b.Fatal(err)
			}
			release()
		}
	})
}
