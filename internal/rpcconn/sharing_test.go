package rpcconn

import (
	"bufio"
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// textFrame returns a framed message whose root struct holds text in
// its first pointer and extra bytes of Data in its second; in several
// segments if multi (the text then in a segment of its own).
func textFrame(t *testing.T, text string, extra int, multi bool) []byte {
	t.Helper()
	arena := capnp.SingleSegment(nil)
	if multi {
		arena = capnp.MultiSegment(nil)
	}
	msg, seg, err := capnp.NewMessage(arena)
	if err != nil {
		t.Fatal(err)
	}
	s, err := capnp.NewRootStruct(seg, capnp.ObjectSize{PointerCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetText(0, text); err != nil {
		t.Fatal(err)
	}
	if extra > 0 {
		if err := s.SetData(1, make([]byte, extra)); err != nil {
			t.Fatal(err)
		}
	}
	if multi && msg.NumSegments() < 2 {
		t.Fatalf("a message of %d segments, want several", msg.NumSegments())
	}
	frame, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// fieldBytes returns the bytes of pointer i of m's root struct, as Text
// or Data.
func fieldBytes(t *testing.T, m *capnp.Message, i uint16, text bool) []byte {
	t.Helper()
	p, err := m.Root()
	if err != nil {
		t.Fatal(err)
	}
	f, err := p.Struct().Ptr(i)
	if err != nil {
		t.Fatal(err)
	}
	if text {
		return f.TextBytes()
	}
	return f.Data()
}

// A large Text of a received frame becomes a string over the frame's own
// buffer (the same bytes: no copy), and that buffer is never reused: the
// next frame of the same size, read after the first is released, gets
// another buffer, and the string keeps its bytes. If the buffer went back
// to its pool, the second frame would be read over the string (and
// under the race detector the release would poison it at once).
func TestTextSharesFrame(t *testing.T) {
	lim := (&Options{}).limits()
	for _, multi := range []bool{false, true} {
		t.Run(fmt.Sprintf("multi=%v", multi), func(t *testing.T) {
			a := strings.Repeat("a", 1<<20)
			b := strings.Repeat("b", 1<<20)
			in := append(textFrame(t, a, 0, multi), textFrame(t, b, 0, multi)...)
			fr := newFrameReader(bufio.NewReaderSize(bytes.NewReader(in), 64<<10), &lim)

			m1, _, err := fr.next()
			if err != nil {
				t.Fatal(err)
			}
			tb := fieldBytes(t, m1, 0, true)
			s, ok := TextString(m1, tb)
			if !ok || s != a {
				t.Fatalf("TextString: ok %v, equal %v", ok, s == a)
			}
			if unsafe.StringData(s) != unsafe.SliceData(tb) {
				t.Fatal("the string is a copy, not the frame's bytes")
			}
			m1.Release()

			m2, _, err := fr.next()
			if err != nil {
				t.Fatal(err)
			}
			tb2 := fieldBytes(t, m2, 0, true)
			if string(tb2) != b {
				t.Fatal("second frame read wrong")
			}
			if within(tb2, unsafe.Slice(unsafe.StringData(s), len(s))) {
				t.Fatal("the second frame was read into the buffer the string shares")
			}
			m2.Release()
			if s != a {
				t.Fatal("the string changed after its message was released and another read")
			}
		})
	}
}

// The buffer a string takes is replaced in its pool: the next frame of
// the size is read into a pooled buffer, as it was before strings shared
// frames, not into one allocated then.
func TestSharedBufferReplaced(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops what is put at random under the race detector")
	}
	lim := (&Options{}).limits()
	a := strings.Repeat("a", 1<<20)
	frame := textFrame(t, a, 0, true)
	var grew []uint64
	// sync.Pool gives back what this goroutine put unless it moved to
	// another processor meanwhile: not every time.
	for range 5 {
		fr := newFrameReader(bufio.NewReaderSize(bytes.NewReader(append(bytes.Clone(frame), frame...)), 64<<10), &lim)
		m1, _, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		// The same Text made into strings three times: one replacement.
		made := allocated(func() {
			for range 3 {
				if _, ok := TextString(m1, fieldBytes(t, m1, 0, true)); !ok {
					t.Error("TextString refused")
				}
			}
		})
		if made < 1<<20 || made > 3<<19 {
			t.Fatalf("three strings over one frame allocated %d bytes, want one buffer of its size", made)
		}
		m1.Release()
		var m2 *capnp.Message
		g := allocated(func() { m2, _, err = fr.next() })
		if err != nil {
			t.Fatal(err)
		}
		m2.Release()
		if g < 64<<10 {
			return
		}
		grew = append(grew, g)
	}
	t.Fatalf("the next frame of the size allocated %v bytes, want it read into a pooled buffer", grew)
}

// Text is copied (TextString says no) when it is small, when it is a
// small part of its message (the string would hold much more than its
// bytes), and when the message's bytes have been lent out as []byte,
// which their holder may change; and bytes are not lent out as []byte
// once strings share the buffer.
func TestTextStringRefused(t *testing.T) {
	lim := (&Options{}).limits()
	read := func(frame []byte) *capnp.Message {
		fr := newFrameReader(bufio.NewReader(bytes.NewReader(frame)), &lim)
		m, _, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Release)
		return m
	}
	big := strings.Repeat("x", 256<<10)

	m := read(textFrame(t, big[:MinLend-1], 0, false))
	if _, ok := TextString(m, fieldBytes(t, m, 0, true)); ok {
		t.Error("a Text under MinLend shares its frame")
	}
	m = read(textFrame(t, big, 1<<20, false))
	if _, ok := TextString(m, fieldBytes(t, m, 0, true)); ok {
		t.Error("a Text of a fifth of its frame shares it")
	}

	m = read(textFrame(t, big, 64<<10, false))
	if !BorrowBytes(m, fieldBytes(t, m, 1, false)) {
		t.Fatal("BorrowBytes refused on a fresh message")
	}
	if _, ok := TextString(m, fieldBytes(t, m, 0, true)); ok {
		t.Error("a Text shares a buffer whose bytes were lent out as []byte")
	}

	m = read(textFrame(t, big, 64<<10, false))
	if _, ok := TextString(m, fieldBytes(t, m, 0, true)); !ok {
		t.Fatal("TextString refused")
	}
	if BorrowBytes(m, fieldBytes(t, m, 1, false)) {
		t.Error("bytes of a buffer that strings share lent out as []byte")
	}

	// A message built here, not received: nothing to share.
	msg, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	s, _ := capnp.NewRootStruct(seg, capnp.ObjectSize{PointerCount: 1})
	_ = s.SetText(0, big)
	if _, ok := TextString(msg, fieldBytes(t, msg, 0, true)); ok {
		t.Error("a Text of a message built here shares its buffer")
	}
}

// Buffers of 64 KiB and more that the pools cannot supply are allocated
// at the frame's size (within the heap's page), not rounded up to their
// class's, and one released serves the next frame of that size.
func TestLargeBufferExact(t *testing.T) {
	// Empty the pools (sync.Pool lets go of what two collections found
	// unused), which other tests have filled.
	runtime.GC()
	runtime.GC()
	for _, n := range []int{exactFrom, 100 << 10, 1<<20 + 24, 3<<20 + 100} {
		b := getRecvBuf(n)
		if cap(b.b) < n || cap(b.b) >= n+pageSize {
			t.Errorf("%d bytes: a buffer of %d", n, cap(b.b))
		}
		if cap(b.b) < classSize(b.class) {
			t.Errorf("%d bytes: a buffer of %d in the class of %d", n, cap(b.b), classSize(b.class))
		}
		b.filled = true
		putRecvBuf(b)
		if raceEnabled {
			continue // sync.Pool drops what is put at random
		}
		// sync.Pool gives back what this goroutine put, unless it
		// moved to another processor meanwhile: not every time.
		reused := false
		for range 20 {
			c := getRecvBuf(n)
			reused = reused || cap(c.b) < n+pageSize
			c.filled = true
			putRecvBuf(c)
		}
		if !reused {
			t.Errorf("%d bytes: a released buffer never served the next frame", n)
		}
	}
}

// classSize is the size of pool class k's buffers (see bufClass).
func classSize(k int) int {
	if k <= fineShift-minBufShift {
		return 1 << (k + minBufShift)
	}
	j := k - (fineShift - minBufShift) - 1
	base := 1 << (fineShift + j/4)
	return base + (j%4+1)*base/4
}

func TestClassSize(t *testing.T) {
	for n := 1; n < 8<<20; n = n*5/4 + 1 {
		k, size := bufClass(n)
		if classSize(k) != size {
			t.Fatalf("class %d of %d bytes: size %d, classSize %d", k, n, size, classSize(k))
		}
	}
}
