package rpcconn

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"capnproto.org/go/capnp/v3"
)

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// TestLentFrame: a message with lent Data and Text fields (in the root
// struct and in a nested one, of sizes that need padding or not) frames
// into bytes that go-capnp's own decoder reads back as the same values,
// whether the writer writes it (writeFrame, writeExt) or flush appends
// it (appendFrame); the lent segments are the caller's bytes, not copies.
func TestLentFrame(t *testing.T) {
	for _, n := range []int{8, 13, 64 << 10, 64<<10 + 5, 1 << 20} {
		msg, root := newMessage()
		st, err := capnp.NewStruct(root.Segment(), capnp.ObjectSize{DataSize: 8, PointerCount: 4})
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Segment().Message().SetRoot(st.ToPtr()); err != nil {
			t.Fatal(err)
		}
		st.SetUint64(0, 0x1234)
		inner, _ := capnp.NewStruct(root.Segment(), capnp.ObjectSize{PointerCount: 2})
		if err := st.SetPtr(3, inner.ToPtr()); err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{1, 2, 3}, n/3+1)[:n]
		text := string(bytes.Repeat([]byte("abc"), n/3+1)[:n])
		other := bytes.Repeat([]byte{9}, n)
		ext := new(outExt)
		if err := lendField(msg, ext, st, 0, data, false, true); err != nil {
			t.Fatal(err)
		}
		if err := lendField(msg, ext, st, 1, stringBytes(text), true, false); err != nil {
			t.Fatal(err)
		}
		if err := st.SetText(2, "inline"); err != nil {
			t.Fatal(err)
		}
		if err := lendField(msg, ext, inner, 1, other, false, false); err != nil {
			t.Fatal(err)
		}
		if &ext.segs[0].b[0] != &data[0] || &ext.segs[2].b[0] != &other[0] {
			t.Fatal("a lent segment is a copy")
		}

		var written bytes.Buffer
		bw := bufio.NewWriterSize(&written, 64<<10)
		c := &Conn{rwc: nopCloser{&written}}
		hdr := make([]byte, frameHeaderSize)
		ext.segs[0].mutable = false // writeLent needs a socket; tested in package mp
		if err := writeFrame(bw, c.rwc, msg, ext, hdr); err != nil {
			t.Fatal(err)
		}
		if err := c.writeExt(bw, ext); err != nil {
			t.Fatal(err)
		}
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		appended, err := appendFrame(nil, msg, ext)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(appended, written.Bytes()) {
			t.Fatalf("%d bytes: appendFrame and writeFrame differ", n)
		}
		got, err := capnp.Unmarshal(written.Bytes())
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got.NumSegments() != 4 {
			t.Errorf("%d bytes: %d segments, want 4", n, got.NumSegments())
		}
		p, err := got.Root()
		if err != nil {
			t.Fatal(err)
		}
		s := p.Struct()
		if s.Uint64(0) != 0x1234 {
			t.Error("data section changed")
		}
		check := func(name string, i uint16, st capnp.Struct, want []byte, isText bool) {
			t.Helper()
			f, err := st.Ptr(i)
			if err != nil {
				t.Fatalf("%d bytes, %s: %v", n, name, err)
			}
			var b []byte
			if isText {
				b = f.TextBytes()
			} else {
				b = f.Data()
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%d bytes, %s: read back %d bytes, not the %d lent", n, name, len(b), len(want))
			}
		}
		check("data", 0, s, data, false)
		check("text", 1, s, []byte(text), true)
		check("inline text", 2, s, []byte("inline"), true)
		ip, _ := s.Ptr(3)
		check("nested data", 1, ip.Struct(), other, false)
		// A Text's NUL is there.
		tp, _ := s.Ptr(1)
		if l := tp.List(); l.Len() != n+1 {
			t.Errorf("%d bytes: the text's list has %d bytes, want %d with its NUL", n, l.Len(), n+1)
		}
		recycleOut(msg)
	}
}

// TestLendRefused: what cannot be lent is refused without changing the
// message: a pointer index beyond the struct, a struct of another message.
func TestLendRefused(t *testing.T) {
	msg, root := newMessage()
	st, _ := capnp.NewStruct(root.Segment(), capnp.ObjectSize{PointerCount: 1})
	other, oroot := newMessage()
	ost, _ := capnp.NewStruct(oroot.Segment(), capnp.ObjectSize{PointerCount: 1})
	ext := new(outExt)
	before := append([]byte(nil), root.Segment().Data()...)
	if err := lendField(msg, ext, st, 1, make([]byte, 100), false, false); err == nil {
		t.Error("pointer 1 of a struct with one: lent")
	}
	if err := lendField(msg, ext, ost, 0, make([]byte, 100), false, false); err == nil {
		t.Error("a struct of another message: lent")
	}
	if !bytes.Equal(before, root.Segment().Data()) || len(ext.segs) != 0 {
		t.Error("a refused lend changed the message")
	}
	recycleOut(msg)
	recycleOut(other)
}

// TestSendBufferRaised: a connection on a unix socket asks for a send
// buffer that holds a large message whole (sendBuffer), within what the
// system allows; one on a TCP socket keeps the kernel's own sizing.
func TestSendBufferRaised(t *testing.T) {
	sndbuf := func(c net.Conn) int {
		raw, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		raw.Control(func(fd uintptr) { n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF) })
		return n
	}
	a, b := socketPair(t)
	defer b.Close()
	before := sndbuf(a)
	c := NewConn(a, nil)
	defer func() { c.Close(); <-c.Done() }()
	after := sndbuf(a)
	wmemMax := 0
	if data, err := os.ReadFile("/proc/sys/net/core/wmem_max"); err == nil {
		wmemMax, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	want := min(int(sendBuffer.Load()), wmemMax) * 2 // the kernel doubles what it is asked
	t.Logf("unix socket send buffer: %d before, %d after (wmem_max %d)", before, after, wmemMax)
	if after < want && after <= before {
		t.Errorf("send buffer %d, want %d (it was %d)", after, want, before)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer l.Close()
	tc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	tb := sndbuf(tc)
	c2 := NewConn(tc, nil)
	defer func() { c2.Close(); <-c2.Done() }()
	if got := sndbuf(tc); got != tb {
		t.Errorf("TCP send buffer changed from %d to %d", tb, got)
	}
}
