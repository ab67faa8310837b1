package rpcmsg

import (
	"bytes"
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

func TestNullBody(t *testing.T) {
	want := []byte{
		0, 0, 0, 0, 2, 0, 0, 0,
		0, 0, 0, 0, 1, 0, 0, 0,
		3, 0, 0, 0, 0, 0, 0, 0,
	}
	if got := NullBody(rpccp.Message_Which_return); !bytes.Equal(got, want) {
		t.Fatalf("NullBody(return) = %v, want %v", got, want)
	}
	msg, err := capnp.Unmarshal(NullBody(rpccp.Message_Which_finish))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil || m.Which() != rpccp.Message_Which_finish || m.HasFinish() {
		t.Fatalf("NullBody(finish) reads as %v (body %v), %v", m.Which(), m.HasFinish(), err)
	}
}

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		sizes []uint32
		want  []byte
	}{
		{[]uint32{4}, []byte{0, 0, 0, 0, 4, 0, 0, 0}},
		{[]uint32{1, 2}, []byte{1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}},
	} {
		if got := Header(tc.sizes...); !bytes.Equal(got, tc.want) {
			t.Errorf("Header(%v) = %v, want %v", tc.sizes, got, tc.want)
		}
	}
}

func TestCall(t *testing.T) {
	b := Frame(Call(7, PromisedAnswer(3, 0, 2), 0xabc, 5, Text("hi")))
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := rpccp.ReadRootMessage(msg)
	c, err := m.Call()
	if err != nil {
		t.Fatalf("%v: %v", m.Which(), err)
	}
	if c.QuestionId() != 7 || c.InterfaceId() != 0xabc || c.MethodId() != 5 {
		t.Errorf("call %d %x.%d", c.QuestionId(), c.InterfaceId(), c.MethodId())
	}
	tgt, _ := c.Target()
	pa, _ := tgt.PromisedAnswer()
	ops, _ := pa.Transform()
	if pa.QuestionId() != 3 || ops.Len() != 2 || ops.At(0).GetPointerField() != 0 || ops.At(1).GetPointerField() != 2 {
		t.Errorf("target: question %d, %d ops", pa.QuestionId(), ops.Len())
	}
	p, _ := c.Params()
	content, _ := p.Content()
	if s, _ := content.Struct().Ptr(0); s.Text() != "hi" {
		t.Errorf("params text %q", s.Text())
	}
}

func TestReader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := a.Write(bytes.Join([][]byte{
			Frame(Finish(4)),
			Frame(Bootstrap(2)),
			Frame(func(m rpccp.Message) { e, _ := m.NewAbort(); e.SetReason("bye") }),
		}, nil))
		wrote <- err
	}()
	r := NewReader(t, b, 5*time.Second, 0)
	m := r.Expect(rpccp.Message_Which_bootstrap)
	if bs, _ := m.Bootstrap(); bs.QuestionId() != 2 {
		t.Errorf("bootstrap question %d, want 2", bs.QuestionId())
	}
	m, err := r.Recv()
	if err != nil || AbortReason(m) != "bye" {
		t.Errorf("Recv = %v %q, %v; want the abort", m.Which(), AbortReason(m), err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}
