package rpcconn

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A recvTemplate is the beginning of the last Call received on an
// import, read through go-capnp: the segment's bytes up to the parameters
// struct (the root pointer, the Message, the Call, its target and its
// Payload, all before the parameters, and reached through near pointers
// only), with where the question ID is. A Call whose bytes up to there
// are the same but for the question ID is the same call to the same
// method of the same export, with no capabilities and parameters of the
// same size at the same place: serveCall gets its callHead without
// reading the message's header structs through go-capnp again (every
// pointer through its bounds and traversal checks), which was a fifth of
// the work of serving a streamed call. Only the role's holder touches it
// (handle), as the frame reader.
type recvTemplate struct {
	ok         bool
	prefix     []byte
	qidOff     int
	importID   uint32
	method     capnp.Method
	params     capnp.ObjectSize
	depthLimit uint
	flags      uint8
}

// record makes msg, a Call read as h through go-capnp, the template, if
// its layout allows (above); otherwise the template is dropped.
func (t *recvTemplate) record(msg *capnp.Message, root rpccp.Message, h *callHead) {
	t.ok = false
	if !structLayoutOK || h.promised || h.redirect || h.descs.Len() != 0 || msg.NumSegments() != 1 {
		return
	}
	seg, err := msg.Segment(0)
	if err != nil || !h.content.IsValid() {
		return
	}
	params := h.content.Struct()
	if params.Segment() != seg {
		return
	}
	call, err := root.Call()
	if err != nil {
		return
	}
	tgt, err := call.Target()
	if err != nil {
		return
	}
	pay, err := call.Params()
	if err != nil {
		return
	}
	n := structOff(params)
	data := seg.Data()
	// The header structs lie before the parameters, and the pointers
	// between them are near pointers to them: the same bytes there are
	// the same structs. (A far pointer's landing pad could be elsewhere.)
	word := func(off uint32) uint64 { return binary.LittleEndian.Uint64(data[off:]) }
	near := func(from uint32, to capnp.Struct) bool {
		raw := word(from)
		if raw&3 != 0 {
			return false
		}
		return int64(from)+8+8*int64(int32(uint32(raw))>>2) == int64(structOff(to))
	}
	within := func(s capnp.Struct, ptrs uint16) bool {
		sz := s.Size()
		off := structOff(s)
		return s.Segment() == seg && off >= 8 && sz.PointerCount >= ptrs &&
			uint64(off)+uint64(sz.DataSize)+8*uint64(sz.PointerCount) <= uint64(n)
	}
	ptr := func(s capnp.Struct, i uint32) uint32 { return structOff(s) + uint32(s.Size().DataSize) + 8*i }
	rs, cs, ts, ps := capnp.Struct(root), capnp.Struct(call), capnp.Struct(tgt), capnp.Struct(pay)
	if n < 8 || int(n) > len(data) || !within(rs, 1) || !within(cs, 2) || !within(ts, 0) || !within(ps, 2) ||
		!near(0, rs) || !near(ptr(rs, 0), cs) || !near(ptr(cs, 0), ts) || !near(ptr(cs, 1), ps) ||
		!near(ptr(ps, 0), params) || word(ptr(ps, 1)) != 0 {
		return
	}
	m := (*structMirror)(unsafe.Pointer(&params))
	t.prefix = append(t.prefix[:0], data[:n]...)
	t.qidOff = int(structOff(cs)) // questionId is the Call's first 32 bits
	t.importID, t.method = h.importID, h.method
	t.params, t.depthLimit, t.flags = m.size, m.depthLimit, m.flags
	t.ok = true
}

// match reads msg as h if it is the template's call (see recvTemplate).
func (t *recvTemplate) match(msg *capnp.Message, h *callHead) bool {
	if !t.ok || msg.NumSegments() != 1 {
		return false
	}
	seg, err := msg.Segment(0)
	if err != nil {
		return false
	}
	b, n, q := seg.Data(), len(t.prefix), t.qidOff
	if uint64(len(b)) < uint64(n)+uint64(t.params.DataSize)+8*uint64(t.params.PointerCount) ||
		!bytes.Equal(b[:q], t.prefix[:q]) || !bytes.Equal(b[q+4:n], t.prefix[q+4:]) {
		return false
	}
	var params capnp.Struct
	m := (*structMirror)(unsafe.Pointer(&params))
	m.seg, m.off, m.size, m.depthLimit, m.flags = seg, uint32(n), t.params, t.depthLimit, t.flags
	*h = callHead{
		qid:      binary.LittleEndian.Uint32(b[q:]),
		importID: t.importID,
		method:   t.method,
		content:  params.ToPtr(),
	}
	return true
}
