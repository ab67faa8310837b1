package rpcconn

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

func TestBufClass(t *testing.T) {
	prevClass, prevSize := 0, 1<<minBufShift
	for n := 0; n <= 80<<20; n += 1 + n/64 {
		class, size := bufClass(n)
		if class < 0 {
			if n <= 1<<maxBufShift {
				t.Fatalf("bufClass(%d): not pooled", n)
			}
			if size != n {
				t.Fatalf("bufClass(%d) = -1, %d", n, size)
			}
			continue
		}
		if class >= numClasses || size < n || class < prevClass || (class == prevClass && size != prevSize) {
			t.Fatalf("bufClass(%d) = %d, %d (previous %d, %d)", n, class, size, prevClass, prevSize)
		}
		if n > 1<<fineShift && size > n+n/4 {
			t.Fatalf("bufClass(%d) = %d, %d: more than a quarter wasted", n, class, size)
		}
		prevClass, prevSize = class, size
	}
	if prevClass != numClasses-1 {
		t.Fatalf("last class %d, want %d", prevClass, numClasses-1)
	}
}

// Received messages live in pooled buffers. Results the caller holds, and
// the arguments of a call still running, must stay intact while many
// other messages of the same sizes come and go (under -race a buffer is
// also overwritten as soon as it is released, so an early release shows
// up as garbage too).
func TestHeldMessagesSurviveBufferReuse(t *testing.T) {
	sizes := []int{8, 300, 5000, 70 << 10, 300 << 10}
	gate := make(chan struct{})
	var argsErr error
	var argsMu sync.Mutex
	srv := capnp.NewClient(server.New([]server.Method{{
		Method: capnp.Method{InterfaceID: schema.Echo_TypeID, MethodID: 0},
		Impl: func(ctx context.Context, call *server.Call) error {
			b, err := schema.Echo_echo_Params(call.Args()).EchoBytes()
			if err != nil {
				return err
			}
			if len(b) > 0 && b[0] == 'h' {
				// A held call: wait until the flood has passed, then
				// check the arguments.
				call.Go()
				<-gate
				if bytes.Count(b, []byte{'h'}) != len(b) {
					argsMu.Lock()
					argsErr = errorString("arguments changed while the call ran")
					argsMu.Unlock()
				}
			}
			res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
			if err != nil {
				return err
			}
			return capnp.Struct(res).SetTextFromBytes(0, b)
		},
	}}, nil, nil))
	client, _ := newPair(t, true, true, srv)
	ctx := testCtx(t)
	boot := client.bootstrap(ctx)
	defer boot.Release()
	e := schema.Echo(boot)

	// Calls whose arguments the server holds.
	var held []schema.Echo_echo_Results_Future
	for _, n := range sizes {
		f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(strings.Repeat("h", n)) })
		defer rel()
		held = append(held, f)
	}
	// Results the caller holds.
	var kept [][]byte
	for _, n := range sizes {
		f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(strings.Repeat("k", n)) })
		defer rel()
		r, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.ResultBytes()
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, b)
	}
	// The flood.
	for i := 0; i < 20; i++ {
		for _, n := range sizes {
			f, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(strings.Repeat("x", n)) })
			r, err := f.Struct()
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := r.ResultBytes(); len(b) != n || bytes.Count(b, []byte{'x'}) != n {
				t.Fatalf("flood call %d: wrong result", i)
			}
			rel()
		}
	}
	for i, b := range kept {
		if len(b) != sizes[i] || bytes.Count(b, []byte{'k'}) != sizes[i] {
			t.Errorf("held results of %d bytes changed", sizes[i])
		}
	}
	close(gate)
	for i, f := range held {
		r, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := r.ResultBytes(); len(b) != sizes[i] || bytes.Count(b, []byte{'h'}) != sizes[i] {
			t.Errorf("results of the held call of %d bytes wrong", sizes[i])
		}
	}
	argsMu.Lock()
	defer argsMu.Unlock()
	if argsErr != nil {
		t.Error(argsErr)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// Many goroutines calling at once with payloads of several KiB fill the
// socket: writes from the calling goroutines are then partial, and the
// writer goroutine carries on from the middle of a frame. Every result
// must come back whole and in its own call.
func TestConcurrentCallsFillTheSocket(t *testing.T) {
	client, _ := newPair(t, true, true, newTestServer().client())
	ctx := testCtx(t)
	boot := client.bootstrap(ctx)
	defer boot.Release()
	e := schema.Echo(boot)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				want := strings.Repeat(string(rune('a'+g)), 1000*(1+(g+i)%40))
				got, err := echo(ctx, e, want)
				if err == nil && got != want {
					err = errorString("wrong result")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Calls queued faster than the peer reads: the first write from the
// calling goroutine is partial, and the writer finishes the frame and
// writes the rest. The peer must read every Call whole and in order.
func TestPartialDirectWrite(t *testing.T) {
	c, p, _ := newRawPair(t, nil)
	ctx := testCtx(t)
	boot := c.Bootstrap(ctx)
	e := schema.Echo(boot)
	const n = 60
	payload := func(i int) string { return strings.Repeat(string(rune('a'+i%26)), 20000+i) }
	var rels []capnp.ReleaseFunc
	for i := 0; i < n; i++ {
		_, rel := e.Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho(payload(i)) })
		rels = append(rels, rel)
	}
	p.expect(rpccp.Message_Which_bootstrap)
	for i := 0; i < n; i++ {
		m := p.expect(rpccp.Message_Which_call)
		call, _ := m.Call()
		params, _ := call.Params()
		content, _ := params.Content()
		got, err := schema.Echo_echo_Params(content.Struct()).Echo()
		if err != nil || got != payload(i) {
			t.Fatalf("call %d: %d bytes, err %v; want %d bytes", i, len(got), err, len(payload(i)))
		}
	}
	c.Close()
	<-c.Done()
	for _, rel := range rels {
		rel()
	}
	boot.Release()
}

// Large messages, whose segments bypass the writer's buffer, round-trip
// byte-exact over a real socketpair, whose buffer is far smaller than
// them (so every write is partial), alone and mixed with small calls
// from other goroutines (so a large segment follows small frames still
// in the buffer). Sizes are around the buffer's size and well above.
func TestLargeMessagesRoundTrip(t *testing.T) {
	client, _ := newPair(t, true, true, newTestServer().client())
	ctx := testCtx(t)
	boot := client.bootstrap(ctx)
	defer boot.Release()
	e := schema.Echo(boot)
	sizes := []int{64<<10 - 9, 64<<10 - 8, 64 << 10, 64<<10 + 1, 1 << 20, 1<<20 + 3}
	// Payloads differ by goroutine and call, and along their length.
	var alphabet [1<<20 + 64]byte
	for i := range alphabet {
		alphabet[i] = byte('a' + i%61%26)
	}
	pattern := func(g, n int) string { return string(alphabet[g%61 : g%61+n]) }
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(sizes); i++ {
				n := 100 + i
				if g%2 == 0 {
					n = sizes[(i+g)%len(sizes)]
				}
				want := pattern(g+i, n)
				got, err := echo(ctx, e, want)
				if err == nil && got != want {
					err = fmt.Errorf("echo of %d bytes: %d bytes back, different", n, len(got))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// releaseOut puts an outgoing message's buffer back into
// bufferpool.Default with only its root word zeroed. Every byte go-capnp
// then hands out of it must read as zero: the root of a new message, and
// new structs, lists and text, in messages of each arena kind.
func TestRecycledBufferReadsAsZero(t *testing.T) {
	const big = 100 << 10
	released := make(map[*byte]int) // a released buffer's first byte: its size
	// dirty builds an outgoing message of about size bytes as the
	// connection does, fills its buffer with garbage (but for the root
	// pointer, which is set), and releases it.
	dirty := func(size int) {
		msg, root := newMessage()
		seg := root.Segment()
		if _, err := capnp.NewUInt8List(seg, int32(size)); err != nil {
			t.Fatal(err)
		}
		b := seg.Data()
		b = b[:cap(b)]
		for i := rootWord; i < len(b); i++ {
			b[i] = 0xff
		}
		released[&b[0]] = size
		releaseOut(msg)
	}
	arenas := map[string]func() capnp.Arena{
		"ours":   func() capnp.Arena { return capnp.SingleSegment(nil) },
		"single": func() capnp.Arena { return capnp.SingleSegment(nil) },
		"multi":  func() capnp.Arena { return capnp.MultiSegment(nil) },
	}
	for name, arena := range arenas {
		reused := make(map[int]int) // by size
		for round := 0; round < 200 && (reused[0] < 2 || reused[big] < 2); round++ {
			dirty(big) // first: it would take the small one and clean it
			dirty(0)
			var msg *capnp.Message
			var seg *capnp.Segment
			if name == "ours" {
				var root rpccp.Message
				msg, root = newMessage()
				seg = root.Segment()
				if root.Which() != rpccp.Message_Which_unimplemented {
					t.Fatalf("%s: new rpc message reads as %v", name, root.Which())
				}
			} else {
				var err error
				msg, seg, err = capnp.NewMessage(arena())
				if err != nil {
					t.Fatal(err)
				}
			}
			// A first allocation takes the root word too; the root
			// is not set yet.
			st, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 64, PointerCount: 4})
			if err != nil {
				t.Fatal(err)
			}
			if name != "ours" {
				p, err := msg.Root()
				if err != nil || p.IsValid() {
					t.Fatalf("%s: root of a new message: %v, %v; want null", name, p, err)
				}
			}
			for off := capnp.DataOffset(0); off < 64; off += 8 {
				if v := st.Uint64(off); v != 0 {
					t.Fatalf("%s: new struct: word at %d is %#x", name, off, v)
				}
			}
			for i := uint16(0); i < 4; i++ {
				if p, err := st.Ptr(i); err != nil || p.IsValid() {
					t.Fatalf("%s: new struct: pointer %d is %v, %v", name, i, p, err)
				}
			}
			checkReuse := func() {
				for i := int64(0); i < msg.NumSegments(); i++ {
					s, _ := msg.Segment(capnp.SegmentID(i))
					if size, ok := released[&s.Data()[:1][0]]; ok {
						reused[size]++
					}
				}
			}
			checkReuse() // the small buffer, before the message grows
			l, err := capnp.NewUInt8List(seg, big)
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.IndexFunc(l.ToPtr().Data(), func(r rune) bool { return r != 0 }); i >= 0 {
				t.Fatalf("%s: new list of %d bytes: byte %d is not zero", name, big, i)
			}
			txt, err := capnp.NewText(seg, strings.Repeat("t", 3000))
			if err != nil {
				t.Fatal(err)
			}
			if d := txt.ToPtr().Data(); len(d) != 3001 || d[3000] != 0 {
				t.Fatalf("%s: new text not NUL-terminated", name)
			}
			checkReuse()
			releaseOut(msg)
		}
		// sync.Pool may drop what is put (it does at random under
		// -race), but not every time.
		if reused[0] < 2 || reused[big] < 2 {
			t.Errorf("%s: released buffers reused %d (small) and %d (large) times in 200 rounds; the test checked little", name, reused[0], reused[big])
		}
	}
}
