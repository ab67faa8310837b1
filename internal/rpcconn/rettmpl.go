package rpcconn

import (
	"encoding/binary"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A retTemplate is the beginning of a Return message with results of one
// size, as AllocResults builds it: every byte up to the results struct
// (the root pointer, the Message, the Return and its Payload pointing to
// the results), the answer ID zero, and where the Return and the Payload
// are in it. AllocResults copies it rather than building the same structs
// through go-capnp for every call (as callTemplate does for Calls).
type retTemplate struct {
	bytes            []byte
	retOff, payOff   uint32
	retSize, paySize capnp.ObjectSize
}

// retTemplates holds the templates of results of up to retTmplMax data
// words and pointers, made on first use.
var retTemplates [retTmplMax + 1][retTmplMax + 1]atomic.Pointer[retTemplate]

const retTmplMax = 8

// retTemplateFor returns the template for results of sz, or nil if there
// is none for that size (large, or not a whole number of words).
func retTemplateFor(sz capnp.ObjectSize) *retTemplate {
	if !structLayoutOK || sz.DataSize%8 != 0 || sz.DataSize/8 > retTmplMax || sz.PointerCount > retTmplMax {
		return nil
	}
	slot := &retTemplates[sz.DataSize/8][sz.PointerCount]
	if t := slot.Load(); t != nil {
		return t
	}
	t := newRetTemplate(sz)
	if t != nil {
		slot.Store(t)
	}
	return t
}

// buildReturn makes the Return message for answer ID id with results of
// sz through go-capnp.
func buildReturn(id uint32, sz capnp.ObjectSize) (*capnp.Message, rpccp.Return, rpccp.Payload, capnp.Struct, error) {
	msg, root := newMessage()
	ret, err := root.NewReturn()
	if err != nil {
		return msg, rpccp.Return{}, rpccp.Payload{}, capnp.Struct{}, err
	}
	ret.SetAnswerId(id)
	ret.SetReleaseParamCaps(false)
	pay, err := ret.NewResults()
	if err != nil {
		return msg, ret, rpccp.Payload{}, capnp.Struct{}, err
	}
	st, err := capnp.NewStruct(pay.Segment(), sz)
	if err != nil {
		return msg, ret, pay, capnp.Struct{}, err
	}
	return msg, ret, pay, st, pay.SetContent(st.ToPtr())
}

// newRetTemplate builds a Return with results of sz through go-capnp and
// keeps its beginning, if go-capnp laid it out as expected.
func newRetTemplate(sz capnp.ObjectSize) *retTemplate {
	msg, ret, pay, st, err := buildReturn(0, sz)
	defer msg.Release()
	if err != nil || msg.NumSegments() != 1 {
		return nil
	}
	seg := st.Segment()
	r, p := capnp.Struct(ret), capnp.Struct(pay)
	n := structOff(st)
	end := func(s capnp.Struct) uint32 {
		return structOff(s) + uint32(s.Size().DataSize) + 8*uint32(s.Size().PointerCount)
	}
	if r.Segment() != seg || p.Segment() != seg || end(r) > n || end(p) > n || structOff(r) < 8 ||
		n != uint32(len(seg.Data()))-uint32(sz.DataSize)-8*uint32(sz.PointerCount) {
		return nil
	}
	return &retTemplate{
		bytes:  append([]byte(nil), seg.Data()[:n]...),
		retOff: structOff(r), retSize: r.Size(),
		payOff: structOff(p), paySize: p.Size(),
	}
}

// build makes a Return message for answer ID id from t, with the results
// struct of sz allocated right after the template's bytes. It reports
// false if go-capnp placed anything elsewhere than expected (then nothing
// is returned, and the caller builds the message as usual).
func (t *retTemplate) build(id uint32, sz capnp.ObjectSize) (*capnp.Message, rpccp.Return, rpccp.Payload, capnp.Struct, bool) {
	msg, seg := newMessageSeg()
	n := len(t.bytes)
	_, err := capnp.NewRootStruct(seg, capnp.ObjectSize{DataSize: capnp.Size(n - 8)})
	if err == nil && len(seg.Data()) == n {
		copy(seg.Data(), t.bytes)
		// answerId is the Return's first 32 bits.
		binary.LittleEndian.PutUint32(seg.Data()[t.retOff:], id)
		st, err := capnp.NewStruct(seg, sz)
		if err == nil && st.Segment() == seg && structOff(st) == uint32(n) {
			ret := rpccp.Return(sibling(st, t.retOff, t.retSize))
			pay := rpccp.Payload(sibling(st, t.payOff, t.paySize))
			return msg, ret, pay, st, true
		}
	}
	msg.Release()
	return nil, rpccp.Return{}, rpccp.Payload{}, capnp.Struct{}, false
}
