package rpcconn

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// A recvPrefix is the beginning of a message received and read through
// go-capnp: the segment's bytes up to its payload's content struct (the
// root pointer, the Message, the Call or Return, and the structs between
// it and the content, all before the content and reached through near
// pointers only), with where the question or answer ID is. A message
// whose bytes up to there are the same but for the ID has the same
// headers, no capabilities, and a content struct of the same size at the
// same place: it is read without going through its header structs with
// go-capnp again (every pointer through its bounds and traversal checks),
// a fifth of the work of serving a streamed call. Only the role's holder
// touches the connection's (handle), as the frame reader.
type recvPrefix struct {
	ok         bool
	prefix     []byte
	idOff      int
	idOff2     int // where a second 32-bit ID is, after idOff (a Call's import ID), or 0
	content    capnp.ObjectSize
	depthLimit uint
	flags      uint8
}

// A recvTemplate is the recvPrefix of the last Call received, with what
// else serving it needs: the same bytes but for the question ID and the
// target's import ID are the same call to the same method (of one export
// or another: a target naming an import is nothing else).
type recvTemplate struct {
	recvPrefix
	method capnp.Method
}

// A retTemplateIn is the recvPrefix of the last Return received with
// results, with the flags the bytes hold.
type retTemplateIn struct {
	recvPrefix
	noFinish, releaseParams bool
}

// headerChain checks the layout recvPrefix relies on in the single
// segment seg of msg: each struct of chain lies between the root pointer
// and the content, each is reached from the previous one's pointer 0
// (the first from the root pointer) except where via says another, by a
// near pointer, the content from the last one's pointer 0, whose pointer
// 1 (its cap table) is null, within maxRecvPrefix bytes. It returns
// where the content begins.
func headerChain(seg *capnp.Segment, content capnp.Struct, chain []capnp.Struct, via []uint32) (uint32, bool) {
	if content.Segment() != seg {
		return 0, false
	}
	n := structOff(content)
	data := seg.Data()
	if n < 8 || int(n) > len(data) || n > maxRecvPrefix {
		return 0, false
	}
	word := func(off uint32) uint64 { return binary.LittleEndian.Uint64(data[off:]) }
	near := func(from uint32, to capnp.Struct) bool {
		raw := word(from)
		return raw&3 == 0 && int64(from)+8+8*int64(int32(uint32(raw))>>2) == int64(structOff(to))
	}
	from := uint32(0)
	for i, s := range chain {
		sz, off := s.Size(), structOff(s)
		if s.Segment() != seg || off < 8 || uint32(sz.PointerCount) <= via[i] ||
			uint64(off)+uint64(sz.DataSize)+8*uint64(sz.PointerCount) > uint64(n) || !near(from, s) {
			return 0, false
		}
		from = off + uint32(sz.DataSize) + 8*via[i]
	}
	last := chain[len(chain)-1]
	ptrs := structOff(last) + uint32(last.Size().DataSize)
	if from != ptrs || last.Size().PointerCount < 2 || !near(ptrs, content) || word(ptrs+8) != 0 {
		return 0, false
	}
	return n, true
}

// maxRecvPrefix bounds a template's prefix: ours are about 100 bytes
// (TestRecvCallTemplate), a peer's larger ones are read through go-capnp
// rather than kept, for the connection's life, as a copy.
const maxRecvPrefix = 1 << 10

// set makes the prefix msg's, up to n, with the ID at idOff (and a
// second at idOff2, if not 0) and the content struct content.
func (p *recvPrefix) set(seg *capnp.Segment, n uint32, idOff, idOff2 uint32, content capnp.Struct) {
	m := (*structMirror)(unsafe.Pointer(&content))
	p.prefix = append(p.prefix[:0], seg.Data()[:n]...)
	p.idOff, p.idOff2 = int(idOff), int(idOff2)
	p.content, p.depthLimit, p.flags = m.size, m.depthLimit, m.flags
	p.ok = true
}

// match returns msg's IDs and content struct if msg begins with the
// prefix.
func (p *recvPrefix) match(msg *capnp.Message) (id, id2 uint32, content capnp.Ptr, ok bool) {
	if !p.ok || msg.NumSegments() != 1 {
		return 0, 0, capnp.Ptr{}, false
	}
	seg, err := msg.Segment(0)
	if err != nil {
		return 0, 0, capnp.Ptr{}, false
	}
	b, n, q, q2 := seg.Data(), len(p.prefix), p.idOff, p.idOff2
	if uint64(len(b)) < uint64(n)+uint64(p.content.DataSize)+8*uint64(p.content.PointerCount) ||
		!bytes.Equal(b[:q], p.prefix[:q]) {
		return 0, 0, capnp.Ptr{}, false
	}
	if q2 == 0 {
		if !bytes.Equal(b[q+4:n], p.prefix[q+4:]) {
			return 0, 0, capnp.Ptr{}, false
		}
	} else {
		if !bytes.Equal(b[q+4:q2], p.prefix[q+4:q2]) || !bytes.Equal(b[q2+4:n], p.prefix[q2+4:]) {
			return 0, 0, capnp.Ptr{}, false
		}
		id2 = binary.LittleEndian.Uint32(b[q2:])
	}
	var st capnp.Struct
	m := (*structMirror)(unsafe.Pointer(&st))
	m.seg, m.off, m.size, m.depthLimit, m.flags = seg, uint32(n), p.content, p.depthLimit, p.flags
	return binary.LittleEndian.Uint32(b[q:]), id2, st.ToPtr(), true
}

// record makes msg, a Call read as h through go-capnp, the template, if
// its layout allows (above); otherwise the template is dropped.
func (t *recvTemplate) record(msg *capnp.Message, root rpccp.Message, h *callHead) {
	t.ok = false
	if !structLayoutOK || h.promised || h.redirect || h.descs.Len() != 0 || msg.NumSegments() != 1 || !h.content.IsValid() {
		return
	}
	seg, err := msg.Segment(0)
	if err != nil {
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
	// The target is the Call's pointer 0 (checked below to lie before
	// the parameters); the Payload its pointer 1.
	cs, ts := capnp.Struct(call), capnp.Struct(tgt)
	ptr0 := structOff(cs) + uint32(cs.Size().DataSize)
	if ts.Segment() != seg || structOff(ts) < 8 || uint64(structOff(ts))+uint64(ts.Size().DataSize)+8*uint64(ts.Size().PointerCount) > uint64(structOff(h.content.Struct())) {
		return
	}
	data := seg.Data()
	raw := binary.LittleEndian.Uint64(data[ptr0:])
	if raw&3 != 0 || int64(ptr0)+8+8*int64(int32(uint32(raw))>>2) != int64(structOff(ts)) {
		return
	}
	n, ok := headerChain(seg, h.content.Struct(), []capnp.Struct{capnp.Struct(root), cs, capnp.Struct(pay)}, []uint32{0, 1, 0})
	if !ok {
		return
	}
	// questionId is the Call's first 32 bits, and importedCap its
	// target's (the target lies after the Call: go-capnp allocates it
	// second, and the IDs must be in order for match). Each must lie in
	// its struct's data section, which lies before the content: a peer's
	// struct with no data section has the ID 0 and its address may be
	// the content's, or that of a pointer match does not compare.
	if structOff(ts) < structOff(cs)+4 || cs.Size().DataSize < 4 || ts.Size().DataSize < 4 {
		return
	}
	t.set(seg, n, structOff(cs), structOff(ts), h.content.Struct())
	t.method = h.method
}

// match reads msg as h if it is the template's call (see recvTemplate):
// a call to the same method of any export.
func (t *recvTemplate) match(msg *capnp.Message, h *callHead) bool {
	id, imp, content, ok := t.recvPrefix.match(msg)
	if !ok {
		return false
	}
	*h = callHead{qid: id, importID: imp, method: t.method, content: content}
	return true
}

// record makes msg, a Return with results and no capabilities read
// through go-capnp, the template, if its layout allows; otherwise the
// template is dropped.
func (t *retTemplateIn) record(msg *capnp.Message, ret rpccp.Return, content capnp.Ptr) {
	t.ok = false
	if !structLayoutOK || msg.NumSegments() != 1 || !content.IsValid() {
		return
	}
	seg, err := msg.Segment(0)
	if err != nil {
		return
	}
	root, err := msg.Root()
	if err != nil {
		return
	}
	pay, err := ret.Results()
	if err != nil {
		return
	}
	n, ok := headerChain(seg, content.Struct(), []capnp.Struct{root.Struct(), capnp.Struct(ret), capnp.Struct(pay)}, []uint32{0, 0, 0})
	if !ok {
		return
	}
	// answerId is the Return's first 32 bits, in its data section (a
	// peer's Return with none has the ID 0).
	if capnp.Struct(ret).Size().DataSize < 4 {
		return
	}
	t.set(seg, n, structOff(capnp.Struct(ret)), 0, content.Struct())
	t.noFinish, t.releaseParams = ret.NoFinishNeeded(), ret.ReleaseParamCaps()
}
