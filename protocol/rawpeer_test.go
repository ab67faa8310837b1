package protocol_test

import (
	"testing"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/protocol/internal/testschema"
)

// Hand-built RPC messages, for peers that do what protocol's own client
// never does: more calls than the limits allow, messages that are too
// deep or too big, and no reading at all.

// frame builds one framed RPC message.
func frame(t *testing.T, build func(seg *capnp.Segment, m rpccp.Message) error) []byte {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rpccp.NewRootMessage(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := build(seg, m); err != nil {
		t.Fatal(err)
	}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawBootstrap asks for the bootstrap capability as question q.
func rawBootstrap(t *testing.T, q uint32) []byte {
	return frame(t, func(_ *capnp.Segment, m rpccp.Message) error {
		b, err := m.NewBootstrap()
		if err != nil {
			return err
		}
		b.SetQuestionId(q)
		return nil
	})
}

// rawCall calls method of interface iface on the answer to question boot
// (the bootstrap capability) as question q, with the params that content
// builds.
func rawCall(t *testing.T, q, boot uint32, iface uint64, method uint16, content func(seg *capnp.Segment) (capnp.Ptr, error)) []byte {
	return frame(t, func(seg *capnp.Segment, m rpccp.Message) error {
		c, err := m.NewCall()
		if err != nil {
			return err
		}
		c.SetQuestionId(q)
		c.SetInterfaceId(iface)
		c.SetMethodId(method)
		tgt, err := c.NewTarget()
		if err != nil {
			return err
		}
		pa, err := tgt.NewPromisedAnswer()
		if err != nil {
			return err
		}
		pa.SetQuestionId(boot)
		p, err := c.NewParams()
		if err != nil {
			return err
		}
		ptr, err := content(seg)
		if err != nil {
			return err
		}
		return p.SetContent(ptr)
	})
}

// rawSleep calls Slow.sleep(ms) on the bootstrap capability (question
// boot) as question q; pad adds that many bytes of data to the params, in
// a field that sleep does not know.
func rawSleep(t *testing.T, q, boot, ms uint32, pad int) []byte {
	return rawCall(t, q, boot, testschema.Slow_TypeID, 0, func(seg *capnp.Segment) (capnp.Ptr, error) {
		s, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8, PointerCount: 1})
		if err != nil {
			return capnp.Ptr{}, err
		}
		s.SetUint32(0, ms)
		if pad > 0 {
			d, err := capnp.NewData(seg, make([]byte, pad))
			if err != nil {
				return capnp.Ptr{}, err
			}
			return s.ToPtr(), s.SetPtr(0, d.ToPtr())
		}
		return s.ToPtr(), nil
	})
}

// rawEcho calls Slow.echo(s) on the bootstrap capability (question boot)
// as question q.
func rawEcho(t *testing.T, q, boot uint32, s string) []byte {
	return rawCall(t, q, boot, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
		st, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 1})
		if err != nil {
			return capnp.Ptr{}, err
		}
		txt, err := capnp.NewText(seg, s)
		if err != nil {
			return capnp.Ptr{}, err
		}
		return st.ToPtr(), st.SetPtr(0, txt.ToPtr())
	})
}
