package protocol_test

import (
	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// Hand-built RPC messages, for peers that do what protocol's own client
// never does: more calls than the limits allow, messages that are too
// deep or too big, and no reading at all. The calls go to the answer to
// a Bootstrap, which rpcmsg.Bootstrap asks for.

// rawCall calls method of interface iface on the answer to question boot
// (the bootstrap capability) as question q, with the params that content
// builds.
func rawCall(q, boot uint32, iface uint64, method uint16, content func(seg *capnp.Segment) (capnp.Ptr, error)) []byte {
	return rpcmsg.Frame(rpcmsg.CallContent(q, rpcmsg.PromisedAnswer(boot), iface, method, content))
}

// rawSleep calls Slow.sleep(ms) on the bootstrap capability (question
// boot) as question q; pad adds that many bytes of data to the params, in
// a field that sleep does not know.
func rawSleep(q, boot, ms uint32, pad int) []byte {
	return rawCall(q, boot, testschema.Slow_TypeID, 0, func(seg *capnp.Segment) (capnp.Ptr, error) {
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
func rawEcho(q, boot uint32, s string) []byte {
	return rawCall(q, boot, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
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
