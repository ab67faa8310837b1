package mp

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// An Encoder carries what writing Go values into one message needs.
// Generated code gets one from a Call or ServerCall and passes it down.
type Encoder struct {
	// handed: proxies written into a method's results, which the method
	// handed over (see the package's rule): the call releases them once
	// the results are sent. Nil when encoding parameters, which the
	// caller keeps.
	handed *[]*Client

	// Where large Text and Data fields may be sent from where their
	// bytes are (lend.go): call, the direct call whose parameters are
	// written (Data too if the caller lends them, as call.ctx says);
	// ret, the Return whose results are written (Data that lies within
	// the call's parameters). Both nil: fields are copied.
	call *Call
	ret  resultLender
}

// resultLender is the Return of a call delivered by a connection
// (rpcconn's answer).
type resultLender interface {
	LendText(s capnp.Struct, i uint16, v string) bool
	LendArgs(s capnp.Struct, i uint16, b []byte) bool
	CopyData(s capnp.Struct, i uint16, b []byte) bool
}

func (e *Encoder) lendText(s capnp.Struct, i uint16, v string) bool {
	if len(v) < MinLend {
		return false
	}
	if e.call != nil && e.call.dc != nil {
		return e.call.dc.LendText(s, i, v)
	}
	return e.ret != nil && e.ret.LendText(s, i, v)
}

func (e *Encoder) lendData(s capnp.Struct, i uint16, v []byte) bool {
	if len(v) < MinLend {
		return false
	}
	// What is not lent is copied into a segment of its own: one pass
	// over the bytes rather than go-capnp's two.
	if c := e.call; c != nil && c.dc != nil {
		return (lends(c.ctx) && c.dc.Lend(s, i, v)) || c.dc.CopyData(s, i, v)
	}
	return e.ret != nil && (e.ret.LendArgs(s, i, v) || e.ret.CopyData(s, i, v))
}

// handOver records c, a proxy written into the message, if the encoder
// writes results.
func (e *Encoder) handOver(c *Client) {
	if e != nil && e.handed != nil {
		*e.handed = append(*e.handed, c)
	}
}

// A Decoder carries what reading one message into Go values needs: a
// budget of Go memory that the values may take, so that a small message
// cannot become a large amount of memory (a list of millions of empty
// structs is a few bytes on the wire), and whether Data may alias the
// message (parameters, borrowed for the call) or must be copied
// (results, which belong to the caller).
type Decoder struct {
	budget int64
	borrow bool
	conn   *rpcconn.Conn // the connection the message came on, if any
	// lent: proxies made for a call's parameters, which the call
	// releases when the method returns (parameters are borrowed);
	// nil when decoding results, which belong to the caller.
	lent *[]*Client
	// call is the call whose results are decoded, if any: its context
	// may borrow large Data results (Borrow) rather than copy them.
	call *Call
}

// lend records c, a proxy made while decoding, if the decoder decodes
// parameters.
func (d *Decoder) lend(c *Client) {
	if d.lent != nil {
		*d.lent = append(*d.lent, c)
	}
}

// ErrDecodeBudget is returned (wrapped) when a message would decode into
// more Go memory than its decoder allows.
var ErrDecodeBudget = errors.New("mp: message decodes into more memory than allowed")

// MinDecodeBudget is the least Go memory any message may decode into;
// DecodeBudgetFactor is how many times its own size a larger message may
// take (a List(Text) of empty texts takes 16 bytes of Go for every 8 on
// the wire; a struct list from a peer with an older, smaller schema
// more).
const (
	MinDecodeBudget    = 4 << 20
	DecodeBudgetFactor = 16
)

// DecodeBudget returns the budget for a message of msgSize bytes.
func DecodeBudget(msgSize uint64) int64 {
	b := int64(MinDecodeBudget)
	if msgSize < math.MaxInt64/(2*DecodeBudgetFactor) {
		b += int64(msgSize) * DecodeBudgetFactor
	} else {
		b = math.MaxInt64 / 2
	}
	return b
}

// NewDecoder returns a decoder that lets values take at most budget
// bytes of Go memory, and whose Data values alias the message if borrow.
func NewDecoder(budget int64, borrow bool) *Decoder {
	return &Decoder{budget: budget, borrow: borrow}
}

func (d *Decoder) reset(budget int64, borrow bool, conn *rpcconn.Conn) {
	d.budget, d.borrow, d.conn = budget, borrow, conn
}

// Charge counts n bytes of Go memory against the budget, and fails once
// it is exhausted. Generated code calls it before it allocates.
func (d *Decoder) Charge(n int64) error {
	if n < 0 || n > d.budget {
		d.budget = -1
		return ErrDecodeBudget
	}
	d.budget -= n
	return nil
}

func (d *Decoder) chargeElems(n int, size uintptr) error {
	if size == 0 {
		size = 1
	}
	if uint64(n) > math.MaxInt64/uint64(size) {
		return d.Charge(-1)
	}
	return d.Charge(int64(n) * int64(size))
}

// ptr reads pointer i of s.
func ptr(s capnp.Struct, i uint16) (capnp.Ptr, error) {
	if i >= s.Size().PointerCount {
		// A struct from a peer with an older schema: the field is
		// absent, which reads as null.
		return capnp.Ptr{}, nil
	}
	return s.Ptr(i)
}

// SetText sets pointer i of s to v, null when v is empty.
func (e *Encoder) SetText(s capnp.Struct, i uint16, v string) error {
	if e.lendText(s, i, v) {
		return nil
	}
	return s.SetText(i, v)
}

// SetTextNonNull sets pointer i of s to v, an empty text when v is
// empty: for fields whose default is not empty.
func (e *Encoder) SetTextNonNull(s capnp.Struct, i uint16, v string) error {
	if e.lendText(s, i, v) {
		return nil
	}
	return s.SetNewText(i, v)
}

// Text reads pointer i of s as text; null reads as "".
func (d *Decoder) Text(s capnp.Struct, i uint16) (string, error) {
	p, err := ptr(s, i)
	if err != nil {
		return "", err
	}
	return d.text(p)
}

// TextDefault reads pointer i of s as text; null reads as def.
func (d *Decoder) TextDefault(s capnp.Struct, i uint16, def string) (string, error) {
	p, err := ptr(s, i)
	if err != nil {
		return "", err
	}
	if !p.IsValid() {
		return def, nil
	}
	return d.text(p)
}

func (d *Decoder) text(p capnp.Ptr) (string, error) {
	b := p.TextBytes()
	if err := d.Charge(int64(len(b))); err != nil {
		return "", err
	}
	// A large Text of a received message: the string is made over the
	// message's buffer, which becomes its memory.
	if s, ok := rpcconn.TextString(p.Message(), b); ok {
		return s, nil
	}
	return string(b), nil
}

// SetData sets pointer i of s to v: null when v is nil, an empty Data
// when v is empty but not nil.
func (e *Encoder) SetData(s capnp.Struct, i uint16, v []byte) error {
	if v == nil {
		return s.SetPtr(i, capnp.Ptr{})
	}
	if e.lendData(s, i, v) {
		return nil
	}
	l, err := capnp.NewData(s.Segment(), v)
	if err != nil {
		return err
	}
	return s.SetPtr(i, l.ToPtr())
}

// Data reads pointer i of s as Data; null reads as nil.
func (d *Decoder) Data(s capnp.Struct, i uint16) ([]byte, error) {
	p, err := ptr(s, i)
	if err != nil {
		return nil, err
	}
	return d.data(p)
}

// DataDefault reads pointer i of s as Data; null reads as a copy of def.
func (d *Decoder) DataDefault(s capnp.Struct, i uint16, def []byte) ([]byte, error) {
	p, err := ptr(s, i)
	if err != nil {
		return nil, err
	}
	if !p.IsValid() {
		return append([]byte(nil), def...), nil
	}
	return d.data(p)
}

func (d *Decoder) data(p capnp.Ptr) ([]byte, error) {
	if !p.IsValid() {
		return nil, nil
	}
	if !p.List().IsValid() {
		return nil, errors.New("mp: Data field is not a list")
	}
	b := p.Data()
	if d.borrow && rpcconn.BorrowBytes(p.Message(), b) {
		if b == nil {
			b = []byte{}
		}
		return b, nil
	}
	if len(b) >= MinLend && d.call != nil && d.call.borrowResults() && rpcconn.BorrowBytes(p.Message(), b) {
		return b, nil
	}
	if err := d.Charge(int64(len(b))); err != nil {
		return nil, err
	}
	// append to an empty slice: the new slice is not zeroed first, as
	// make's would be.
	return append([]byte{}, b...), nil
}

// A Codec writes and reads Go values of type T as Cap'n Proto pointers:
// Text, Data, lists, structs, capabilities and AnyPointer. Generated code
// composes codecs for nested lists and for the type parameters of
// generic structs and interfaces.
type Codec[T any] struct {
	// Encode writes v into seg and returns the pointer to it; a null
	// pointer for a nil value.
	Encode func(e *Encoder, seg *capnp.Segment, v T) (capnp.Ptr, error)
	// Decode reads p; a null pointer reads as T's zero value.
	Decode func(d *Decoder, p capnp.Ptr) (T, error)
}

// SetPtr sets pointer i of s to v, written by c.
func SetPtr[T any](e *Encoder, s capnp.Struct, i uint16, v T, c *Codec[T]) error {
	p, err := c.Encode(e, s.Segment(), v)
	if err != nil {
		return err
	}
	return s.SetPtr(i, p)
}

// GetPtr reads pointer i of s with c.
func GetPtr[T any](d *Decoder, s capnp.Struct, i uint16, c *Codec[T]) (T, error) {
	p, err := ptr(s, i)
	if err != nil {
		var zero T
		return zero, err
	}
	return c.Decode(d, p)
}

// GetPtrDefault reads pointer i of s with c; a null pointer reads as the
// value def decodes to (the field's default, as the schema's canonical
// encoding of it: see DefaultPtr).
func GetPtrDefault[T any](d *Decoder, s capnp.Struct, i uint16, c *Codec[T], def []byte) (T, error) {
	p, err := ptr(s, i)
	if err != nil {
		var zero T
		return zero, err
	}
	if !p.IsValid() {
		p, err = DefaultPtr(def)
		if err != nil {
			var zero T
			return zero, err
		}
	}
	return c.Decode(d, p)
}

// DefaultPtr returns the pointer encoded in def, the canonical
// single-segment encoding of a default value as generated code embeds
// it (a message whose root pointer is the value).
func DefaultPtr(def []byte) (capnp.Ptr, error) {
	if len(def) == 0 {
		return capnp.Ptr{}, nil
	}
	msg := &capnp.Message{Arena: capnp.SingleSegment(append([]byte(nil), def...))}
	msg.ResetReadLimit(uint64(len(def)) * 8)
	return msg.Root()
}

// TextCodec writes and reads Text as string; "" is written as null.
var TextCodec = &Codec[string]{
	Encode: func(_ *Encoder, seg *capnp.Segment, v string) (capnp.Ptr, error) {
		if v == "" {
			return capnp.Ptr{}, nil
		}
		l, err := capnp.NewText(seg, v)
		return l.ToPtr(), err
	},
	Decode: func(d *Decoder, p capnp.Ptr) (string, error) { return d.text(p) },
}

// DataCodec writes and reads Data as []byte; nil is written as null.
var DataCodec = &Codec[[]byte]{
	Encode: func(_ *Encoder, seg *capnp.Segment, v []byte) (capnp.Ptr, error) {
		if v == nil {
			return capnp.Ptr{}, nil
		}
		l, err := capnp.NewData(seg, v)
		return l.ToPtr(), err
	},
	Decode: func(d *Decoder, p capnp.Ptr) ([]byte, error) { return d.data(p) },
}

// Struct is implemented by the pointer types of generated structs (and
// groups).
type Struct interface {
	// CapnpSize is the size of the struct on the wire.
	CapnpSize() capnp.ObjectSize
	// EncodeCapnp writes the value into s, a struct of CapnpSize.
	EncodeCapnp(e *Encoder, s capnp.Struct) error
	// DecodeCapnp reads s into the value, which is its zero value (or
	// holds what an earlier decode left: every field is written).
	DecodeCapnp(d *Decoder, s capnp.Struct) error
}

// StructPtr constrains P to be the pointer type of a generated struct T.
type StructPtr[T any] interface {
	*T
	Struct
}

// SetStruct sets pointer i of s to a new struct holding *v; null if v is
// nil.
func SetStruct[T any, P StructPtr[T]](e *Encoder, s capnp.Struct, i uint16, v *T) error {
	p, err := encodeStruct[T, P](e, s.Segment(), v)
	if err != nil {
		return err
	}
	return s.SetPtr(i, p)
}

func encodeStruct[T any, P StructPtr[T]](e *Encoder, seg *capnp.Segment, v *T) (capnp.Ptr, error) {
	if v == nil {
		return capnp.Ptr{}, nil
	}
	pv := P(v)
	st, err := capnp.NewStruct(seg, pv.CapnpSize())
	if err != nil {
		return capnp.Ptr{}, err
	}
	if err := pv.EncodeCapnp(e, st); err != nil {
		return capnp.Ptr{}, err
	}
	return st.ToPtr(), nil
}

// GetStruct reads pointer i of s as a struct; null reads as nil.
func GetStruct[T any, P StructPtr[T]](d *Decoder, s capnp.Struct, i uint16) (*T, error) {
	p, err := ptr(s, i)
	if err != nil {
		return nil, err
	}
	return decodeStruct[T, P](d, p)
}

func decodeStruct[T any, P StructPtr[T]](d *Decoder, p capnp.Ptr) (*T, error) {
	if !p.IsValid() {
		return nil, nil
	}
	st := p.Struct()
	if !st.IsValid() {
		return nil, errors.New("mp: struct field does not point to a struct")
	}
	var zero T
	if err := d.Charge(int64(unsafe.Sizeof(zero))); err != nil {
		return nil, err
	}
	v := new(T)
	if err := P(v).DecodeCapnp(d, st); err != nil {
		return nil, err
	}
	return v, nil
}

// StructCodec returns the codec of *T, a generated struct; nil is null.
func StructCodec[T any, P StructPtr[T]]() *Codec[*T] {
	return &Codec[*T]{Encode: encodeStruct[T, P], Decode: decodeStruct[T, P]}
}

// Scalar is the Go types of Cap'n Proto's numbers.
type Scalar interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// ScalarListCodec returns the codec of a list of numbers (or enums,
// whose Go types are ~uint16); nil is null.
func ScalarListCodec[T Scalar]() *Codec[[]T] {
	return &Codec[[]T]{Encode: encodeScalarList[T], Decode: decodeScalarList[T]}
}

func scalarSize[T Scalar]() capnp.Size {
	var zero T
	return capnp.Size(unsafe.Sizeof(zero))
}

func encodeScalarList[T Scalar](_ *Encoder, seg *capnp.Segment, v []T) (capnp.Ptr, error) {
	if v == nil {
		return capnp.Ptr{}, nil
	}
	if len(v) >= 1<<29 {
		return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", len(v))
	}
	n := int32(len(v))
	switch scalarSize[T]() {
	case 1:
		l, err := capnp.NewUInt8List(seg, n)
		if err != nil {
			return capnp.Ptr{}, err
		}
		for i, x := range v {
			l.Set(i, uint8(x))
		}
		return l.ToPtr(), nil
	case 2:
		l, err := capnp.NewUInt16List(seg, n)
		if err != nil {
			return capnp.Ptr{}, err
		}
		for i, x := range v {
			l.Set(i, uint16(x))
		}
		return l.ToPtr(), nil
	case 4:
		l, err := capnp.NewUInt32List(seg, n)
		if err != nil {
			return capnp.Ptr{}, err
		}
		for i, x := range v {
			l.Set(i, bits32(x))
		}
		return l.ToPtr(), nil
	default:
		l, err := capnp.NewUInt64List(seg, n)
		if err != nil {
			return capnp.Ptr{}, err
		}
		for i, x := range v {
			l.Set(i, bits64(x))
		}
		return l.ToPtr(), nil
	}
}

// bits32 and bits64 return the wire bits of x, a number of that many
// bytes: an integer's two's complement, a float's IEEE bits (the same
// bytes in memory, whatever T's name).
func bits32[T Scalar](x T) uint32 { return *(*uint32)(unsafe.Pointer(&x)) }

func bits64[T Scalar](x T) uint64 { return *(*uint64)(unsafe.Pointer(&x)) }

func from32[T Scalar](b uint32) T { return *(*T)(unsafe.Pointer(&b)) }

func from64[T Scalar](b uint64) T { return *(*T)(unsafe.Pointer(&b)) }

// listOf reads p, which is not null, as a list.
func listOf(p capnp.Ptr) (capnp.List, error) {
	l := p.List()
	if !l.IsValid() {
		return capnp.List{}, errors.New("mp: list field does not point to a list")
	}
	return l, nil
}

func decodeScalarList[T Scalar](d *Decoder, p capnp.Ptr) ([]T, error) {
	if !p.IsValid() {
		return nil, nil
	}
	l, err := listOf(p)
	if err != nil {
		return nil, err
	}
	n := l.Len()
	var zero T
	if err := d.chargeElems(n, unsafe.Sizeof(zero)); err != nil {
		return nil, err
	}
	// A list whose elements are not numbers of T's size (a struct list
	// standing for a list of its first field, or a mismatch) reads as
	// zeros where go-capnp cannot read an element.
	out := make([]T, n)
	switch scalarSize[T]() {
	case 1:
		u := capnp.UInt8List(l)
		for i := range out {
			out[i] = T(u.At(i))
		}
	case 2:
		u := capnp.UInt16List(l)
		for i := range out {
			out[i] = T(u.At(i))
		}
	case 4:
		u := capnp.UInt32List(l)
		for i := range out {
			out[i] = from32[T](u.At(i))
		}
	default:
		u := capnp.UInt64List(l)
		for i := range out {
			out[i] = from64[T](u.At(i))
		}
	}
	return out, nil
}

// BoolListCodec writes and reads List(Bool); nil is null.
var BoolListCodec = &Codec[[]bool]{
	Encode: func(_ *Encoder, seg *capnp.Segment, v []bool) (capnp.Ptr, error) {
		if v == nil {
			return capnp.Ptr{}, nil
		}
		if len(v) >= 1<<29 {
			return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", len(v))
		}
		l, err := capnp.NewBitList(seg, int32(len(v)))
		if err != nil {
			return capnp.Ptr{}, err
		}
		for i, x := range v {
			l.Set(i, x)
		}
		return l.ToPtr(), nil
	},
	Decode: func(d *Decoder, p capnp.Ptr) ([]bool, error) {
		if !p.IsValid() {
			return nil, nil
		}
		l, err := listOf(p)
		if err != nil {
			return nil, err
		}
		if err := d.chargeElems(l.Len(), 1); err != nil {
			return nil, err
		}
		out := make([]bool, l.Len())
		bl := capnp.BitList(l)
		for i := range out {
			out[i] = bl.At(i)
		}
		return out, nil
	},
}

// VoidListCodec writes and reads List(Void) as its length in a []struct{}.
var VoidListCodec = &Codec[[]struct{}]{
	Encode: func(_ *Encoder, seg *capnp.Segment, v []struct{}) (capnp.Ptr, error) {
		if v == nil {
			return capnp.Ptr{}, nil
		}
		if len(v) >= 1<<29 {
			return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", len(v))
		}
		return capnp.NewVoidList(seg, int32(len(v))).ToPtr(), nil
	},
	Decode: func(d *Decoder, p capnp.Ptr) ([]struct{}, error) {
		if !p.IsValid() {
			return nil, nil
		}
		l, err := listOf(p)
		if err != nil {
			return nil, err
		}
		if err := d.chargeElems(l.Len(), 1); err != nil {
			return nil, err
		}
		return make([]struct{}, l.Len()), nil
	},
}

// StructListCodec returns the codec of a list of generated structs; nil
// is null.
func StructListCodec[T any, P StructPtr[T]]() *Codec[[]T] {
	return &Codec[[]T]{
		Encode: func(e *Encoder, seg *capnp.Segment, v []T) (capnp.Ptr, error) {
			if v == nil {
				return capnp.Ptr{}, nil
			}
			if len(v) >= 1<<29 {
				return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", len(v))
			}
			var zero T
			l, err := capnp.NewCompositeList(seg, P(&zero).CapnpSize(), int32(len(v)))
			if err != nil {
				return capnp.Ptr{}, err
			}
			for i := range v {
				if err := P(&v[i]).EncodeCapnp(e, l.Struct(i)); err != nil {
					return capnp.Ptr{}, err
				}
			}
			return l.ToPtr(), nil
		},
		Decode: func(d *Decoder, p capnp.Ptr) ([]T, error) {
			if !p.IsValid() {
				return nil, nil
			}
			l, err := listOf(p)
			if err != nil {
				return nil, err
			}
			var zero T
			if err := d.chargeElems(l.Len(), unsafe.Sizeof(zero)); err != nil {
				return nil, err
			}
			out := make([]T, l.Len())
			for i := range out {
				if err := P(&out[i]).DecodeCapnp(d, l.Struct(i)); err != nil {
					return nil, err
				}
			}
			return out, nil
		},
	}
}

// ListCodec returns the codec of a list of pointers (texts, data, lists,
// capabilities, AnyPointers), each written and read by elem; nil is
// null.
func ListCodec[T any](elem *Codec[T]) *Codec[[]T] {
	return &Codec[[]T]{
		Encode: func(e *Encoder, seg *capnp.Segment, v []T) (capnp.Ptr, error) {
			if v == nil {
				return capnp.Ptr{}, nil
			}
			if len(v) >= 1<<29 {
				return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", len(v))
			}
			l, err := capnp.NewPointerList(seg, int32(len(v)))
			if err != nil {
				return capnp.Ptr{}, err
			}
			for i := range v {
				p, err := elem.Encode(e, seg, v[i])
				if err != nil {
					return capnp.Ptr{}, err
				}
				if err := l.Set(i, p); err != nil {
					return capnp.Ptr{}, err
				}
			}
			return l.ToPtr(), nil
		},
		Decode: func(d *Decoder, p capnp.Ptr) ([]T, error) {
			if !p.IsValid() {
				return nil, nil
			}
			l, err := listOf(p)
			if err != nil {
				return nil, err
			}
			var zero T
			if err := d.chargeElems(l.Len(), unsafe.Sizeof(zero)); err != nil {
				return nil, err
			}
			out := make([]T, l.Len())
			pl := capnp.PointerList(l)
			for i := range out {
				ep, err := pl.At(i)
				if err != nil {
					return nil, err
				}
				if out[i], err = elem.Decode(d, ep); err != nil {
					return nil, err
				}
			}
			return out, nil
		},
	}
}
