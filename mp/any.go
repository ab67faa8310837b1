package mp

import (
	"errors"

	"capnproto.org/go/capnp/v3"
)

// An AnyPointer is the Go form of Cap'n Proto's AnyPointer, AnyStruct
// and AnyList: a pointer of any kind, in a message of its own that the
// holder owns. Read it with Ptr (go-capnp's API) or the typed accessors;
// make one with NewAnyPointer or the Any* constructors. One that holds
// capabilities holds references to them until Release.
type AnyPointer struct {
	p capnp.Ptr
}

// NewAnyPointer returns an AnyPointer holding a copy of p.
func NewAnyPointer(p capnp.Ptr) (AnyPointer, error) {
	if !p.IsValid() {
		return AnyPointer{}, nil
	}
	msg, _, err := capnp.NewMessage(capnp.MultiSegment(nil))
	if err != nil {
		return AnyPointer{}, err
	}
	if err := msg.SetRoot(p); err != nil {
		msg.Release()
		return AnyPointer{}, err
	}
	root, err := msg.Root()
	if err != nil {
		msg.Release()
		return AnyPointer{}, err
	}
	return AnyPointer{p: root}, nil
}

// AnyText returns an AnyPointer holding the text s.
func AnyText(s string) AnyPointer {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return AnyPointer{}
	}
	t, err := capnp.NewText(seg, s)
	if err != nil || msg.SetRoot(t.ToPtr()) != nil {
		return AnyPointer{}
	}
	return AnyPointer{p: t.ToPtr()}
}

// AnyData returns an AnyPointer holding a copy of b.
func AnyData(b []byte) AnyPointer {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return AnyPointer{}
	}
	d, err := capnp.NewData(seg, b)
	if err != nil || msg.SetRoot(d.ToPtr()) != nil {
		return AnyPointer{}
	}
	return AnyPointer{p: d.ToPtr()}
}

// AnyStruct returns an AnyPointer holding the struct *v.
func AnyStruct[T any, P StructPtr[T]](v *T) (AnyPointer, error) {
	msg, seg, err := capnp.NewMessage(capnp.MultiSegment(nil))
	if err != nil {
		return AnyPointer{}, err
	}
	p, err := encodeStruct[T, P](&Encoder{}, seg, v)
	if err == nil {
		err = msg.SetRoot(p)
	}
	if err != nil {
		msg.Release()
		return AnyPointer{}, err
	}
	return AnyPointer{p: p}, nil
}

// StructOf reads a as the struct T (nil if a is null).
func StructOf[T any, P StructPtr[T]](a AnyPointer) (*T, error) {
	if a.IsNull() {
		return nil, nil
	}
	if !a.p.Struct().IsValid() {
		return nil, errors.New("mp: AnyPointer does not hold a struct")
	}
	return decodeStruct[T, P](NewDecoder(DecodeBudget(a.size()), false), a.p)
}

// Ptr returns the pointer, valid until Release.
func (a AnyPointer) Ptr() capnp.Ptr { return a.p }

// IsNull reports whether a holds nothing (Cap'n Proto's null pointer).
func (a AnyPointer) IsNull() bool { return !a.p.IsValid() }

// Text returns a's text, or "" if it holds something else.
func (a AnyPointer) Text() string { return a.p.Text() }

// Data returns a copy of a's bytes, or nil if it holds something else.
func (a AnyPointer) Data() []byte {
	b := a.p.Data()
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// Release releases the capabilities a holds, if any; a must not be used
// afterwards.
func (a AnyPointer) Release() {
	if m := a.p.Message(); m != nil {
		m.Release()
	}
}

func (a AnyPointer) size() uint64 {
	m := a.p.Message()
	if m == nil {
		return 0
	}
	n, _ := m.TotalSize()
	return n
}

// AnyPointerCodec writes and reads AnyPointer fields: the pointer is
// copied into the message written, and out of the message read.
var AnyPointerCodec = &Codec[AnyPointer]{
	Encode: func(_ *Encoder, seg *capnp.Segment, v AnyPointer) (capnp.Ptr, error) {
		// The caller's SetPtr copies v into seg's message.
		return v.p, nil
	},
	Decode: func(d *Decoder, p capnp.Ptr) (AnyPointer, error) {
		if !p.IsValid() {
			return AnyPointer{}, nil
		}
		a, err := NewAnyPointer(p)
		if err != nil {
			return AnyPointer{}, err
		}
		if err := d.Charge(int64(a.size())); err != nil {
			a.Release()
			return AnyPointer{}, err
		}
		return a, nil
	},
}
