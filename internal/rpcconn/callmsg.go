package rpcconn

import (
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A callTemplate is the beginning of a Call message to one method of one
// import, with parameters of one size: every byte up to the parameters
// struct (the root pointer, the Message, the Call with its target and
// its Payload pointing to the parameters), the question ID zero, and
// where the Call and the Payload are in it. A stream of calls to one
// method copies it rather than building the same structs through
// go-capnp for each call: a third of a small call's sending work.
type callTemplate struct {
	method            capnp.Method // InterfaceID and MethodID
	size              capnp.ObjectSize
	bytes             []byte
	callOff, payOff   uint32
	callSize, paySize capnp.ObjectSize
}

// tmplSlot is where an import keeps the callTemplate of the last method
// called on it directly.
type tmplSlot = atomic.Pointer[callTemplate]

func (t *callTemplate) fits(m capnp.Method, size capnp.ObjectSize) bool {
	return t.method.InterfaceID == m.InterfaceID && t.method.MethodID == m.MethodID && t.size == size
}

// newCallMsg builds a Call message to method m of h, without its question
// ID, and returns it with its Call, its Payload and the parameters
// struct of size to fill: from the import's template if it is that of
// m (see callTemplate), else through go-capnp, keeping a template of it.
func (h *importClient) newCallMsg(m capnp.Method, size capnp.ObjectSize) (*capnp.Message, rpccp.Call, rpccp.Payload, capnp.Struct, error) {
	if t := h.tmpl.Load(); t != nil && t.fits(m, size) {
		if msg, call, pay, params, ok := t.build(); ok {
			return msg, call, pay, params, nil
		}
	}
	msg, root := newMessage()
	call, pay, params, err := buildCallMsg(root, h.id, m, size)
	if err != nil {
		msg.Release()
		return nil, rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	seg := params.Segment()
	if structLayoutOK && msg.NumSegments() == 1 && seg != nil &&
		capnp.Struct(call).Segment() == seg && capnp.Struct(pay).Segment() == seg {
		off := structOff(params)
		h.tmpl.Store(&callTemplate{
			method: m, size: size,
			bytes:   append([]byte(nil), seg.Data()[:off]...),
			callOff: structOff(capnp.Struct(call)), callSize: capnp.Struct(call).Size(),
			payOff: structOff(capnp.Struct(pay)), paySize: capnp.Struct(pay).Size(),
		})
	}
	return msg, call, pay, params, nil
}

func buildCallMsg(root rpccp.Message, id uint32, m capnp.Method, size capnp.ObjectSize) (rpccp.Call, rpccp.Payload, capnp.Struct, error) {
	call, err := root.NewCall()
	if err != nil {
		return rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	call.SetInterfaceId(m.InterfaceID)
	call.SetMethodId(m.MethodID)
	tgt, err := call.NewTarget()
	if err != nil {
		return rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	tgt.SetImportedCap(id)
	pay, err := call.NewParams()
	if err != nil {
		return rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	params, err := capnp.NewStruct(pay.Segment(), size)
	if err != nil {
		return rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	if err := pay.SetContent(params.ToPtr()); err != nil {
		return rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	return call, pay, params, nil
}

// build makes a message from t: the template's bytes, then the
// parameters struct allocated right after them, where the template's
// Payload points. It reports false if go-capnp placed anything elsewhere
// than expected (then nothing is returned, and the caller builds the
// message as usual).
func (t *callTemplate) build() (*capnp.Message, rpccp.Call, rpccp.Payload, capnp.Struct, bool) {
	msg, seg := newMessageSeg()
	n := len(t.bytes)
	// Room for the template: the root pointer that go-capnp allocates
	// first, then the rest as one struct, which the template overwrites.
	_, err := capnp.NewRootStruct(seg, capnp.ObjectSize{DataSize: capnp.Size(n - 8)})
	if err == nil && len(seg.Data()) == n {
		copy(seg.Data(), t.bytes)
		params, err := capnp.NewStruct(seg, t.size)
		if err == nil && params.Segment() == seg && structOff(params) == uint32(n) {
			call := rpccp.Call(sibling(params, t.callOff, t.callSize))
			pay := rpccp.Payload(sibling(params, t.payOff, t.paySize))
			return msg, call, pay, params, true
		}
	}
	msg.Release()
	return nil, rpccp.Call{}, rpccp.Payload{}, capnp.Struct{}, false
}
