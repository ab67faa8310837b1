package mp

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// CodecFor returns the codec of T, a Go type that a Cap'n Proto pointer
// type maps to: string (Text), []byte (Data), AnyPointer, *Client (an
// untyped capability), a pointer to a generated struct, a generated
// interface, or a slice of any of these or of numbers, bools, enums and
// generated structs (lists). Generated code uses it for the type
// parameters of generic structs and interfaces, whose codecs it cannot
// name. It panics if T is none of these: the type arguments of generated
// generic types are checked when they are instantiated.
func CodecFor[T any]() *Codec[T] {
	t := reflect.TypeFor[T]()
	if v, ok := codecs.Load(t); ok {
		return v.(*Codec[T])
	}
	rc := reflectCodec(t)
	c := &Codec[T]{
		Encode: func(e *Encoder, seg *capnp.Segment, v T) (capnp.Ptr, error) {
			return rc.enc(e, seg, reflect.ValueOf(&v).Elem())
		},
		Decode: func(d *Decoder, p capnp.Ptr) (T, error) {
			var v T
			err := rc.dec(d, p, reflect.ValueOf(&v).Elem())
			return v, err
		},
	}
	actual, _ := codecs.LoadOrStore(t, c)
	return actual.(*Codec[T])
}

var codecs sync.Map // reflect.Type -> *Codec[T]

// rcodec writes and reads values of one Go type through reflection.
type rcodec struct {
	enc func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error)
	dec func(d *Decoder, p capnp.Ptr, into reflect.Value) error
}

var (
	structType     = reflect.TypeFor[Struct]()
	anyPointerType = reflect.TypeFor[AnyPointer]()
	clientPtrType  = reflect.TypeFor[*Client]()
)

// capCodec is implemented by *Interface[I] for any I.
type capCodec interface {
	encodeAny(e *Encoder, seg *capnp.Segment, v any) (capnp.Ptr, error)
	decodeAny(d *Decoder, p capnp.Ptr) (any, error)
}

func (x *Interface[I]) encodeAny(e *Encoder, seg *capnp.Segment, v any) (capnp.Ptr, error) {
	iv, _ := v.(I)
	return x.encode(e, seg, iv)
}

func (x *Interface[I]) decodeAny(d *Decoder, p capnp.Ptr) (any, error) {
	return x.decode(d, p)
}

// typed wraps a Codec[T] for reflection.
func typed[T any](c *Codec[T]) rcodec {
	return rcodec{
		enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
			return c.Encode(e, seg, v.Interface().(T))
		},
		dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
			x, err := c.Decode(d, p)
			if err == nil {
				into.Set(reflect.ValueOf(&x).Elem())
			}
			return err
		},
	}
}

var clientCodec = &Codec[*Client]{
	Encode: func(e *Encoder, seg *capnp.Segment, v *Client) (capnp.Ptr, error) {
		if v == nil {
			return capnp.Ptr{}, nil
		}
		e.handOver(v)
		cl := v.ref()
		id := seg.Message().CapTable().Add(cl)
		return capnp.NewInterface(seg, id).ToPtr(), nil
	},
	Decode: func(d *Decoder, p capnp.Ptr) (*Client, error) {
		if !p.IsValid() {
			return nil, nil
		}
		iface := p.Interface()
		if !iface.IsValid() {
			return nil, fmt.Errorf("mp: Capability field does not point to a capability")
		}
		if err := d.Charge(int64(unsafe.Sizeof(Client{}))); err != nil {
			return nil, err
		}
		cl := iface.Client()
		if !cl.IsValid() {
			return nil, nil
		}
		c := newClient(cl.AddRef(), d.conn)
		d.lend(c)
		return c, nil
	},
}

// ClientCodec writes and reads Cap'n Proto's Capability type (a
// capability of no interface in particular) as *Client.
func ClientCodec() *Codec[*Client] { return clientCodec }

func reflectCodec(t reflect.Type) rcodec {
	switch {
	case t.Kind() == reflect.String:
		return typed(convert[string](t, TextCodec))
	case t == anyPointerType:
		return typed(AnyPointerCodec)
	case t == clientPtrType:
		return typed(clientCodec)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && t.Elem().Name() == "uint8":
		return typed(DataCodec)
	case t.Kind() == reflect.Pointer && t.Implements(structType):
		return structRCodec(t.Elem())
	case t.Kind() == reflect.Interface:
		v, ok := interfaces.Load(t)
		if !ok {
			panic(fmt.Sprintf("mp: %v is not a generated interface", t))
		}
		cc := v.(capCodec)
		return rcodec{
			enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
				return cc.encodeAny(e, seg, v.Interface())
			},
			dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
				x, err := cc.decodeAny(d, p)
				if err == nil && x != nil {
					into.Set(reflect.ValueOf(x))
				}
				return err
			},
		}
	case t.Kind() == reflect.Slice:
		return listRCodec(t)
	}
	panic(fmt.Sprintf("mp: %v is not the Go type of a Cap'n Proto pointer type", t))
}

// convert returns c for a type whose underlying type is string: only
// string itself is supported.
func convert[T any](t reflect.Type, c *Codec[T]) *Codec[T] {
	if t != reflect.TypeFor[T]() {
		panic(fmt.Sprintf("mp: %v is not the Go type of a Cap'n Proto pointer type (use %v)", t, reflect.TypeFor[T]()))
	}
	return c
}

func structRCodec(st reflect.Type) rcodec {
	return rcodec{
		enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
			if v.IsNil() {
				return capnp.Ptr{}, nil
			}
			sv := v.Interface().(Struct)
			s, err := capnp.NewStruct(seg, sv.CapnpSize())
			if err != nil {
				return capnp.Ptr{}, err
			}
			if err := sv.EncodeCapnp(e, s); err != nil {
				return capnp.Ptr{}, err
			}
			return s.ToPtr(), nil
		},
		dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
			if !p.IsValid() {
				return nil
			}
			s := p.Struct()
			if !s.IsValid() {
				return fmt.Errorf("mp: struct field does not point to a struct")
			}
			if err := d.Charge(int64(st.Size())); err != nil {
				return err
			}
			nv := reflect.New(st)
			if err := nv.Interface().(Struct).DecodeCapnp(d, s); err != nil {
				return err
			}
			into.Set(nv)
			return nil
		},
	}
}

func listRCodec(t reflect.Type) rcodec {
	et := t.Elem()
	switch et.Kind() {
	case reflect.Bool:
		return typed(convertSlice(t, BoolListCodec))
	case reflect.Int8:
		return scalarRCodec[int8](t)
	case reflect.Int16:
		return scalarRCodec[int16](t)
	case reflect.Int32:
		return scalarRCodec[int32](t)
	case reflect.Int64:
		return scalarRCodec[int64](t)
	case reflect.Uint8:
		return scalarRCodec[uint8](t)
	case reflect.Uint16:
		return scalarRCodec[uint16](t)
	case reflect.Uint32:
		return scalarRCodec[uint32](t)
	case reflect.Uint64:
		return scalarRCodec[uint64](t)
	case reflect.Float32:
		return scalarRCodec[float32](t)
	case reflect.Float64:
		return scalarRCodec[float64](t)
	case reflect.Struct:
		if et.Size() == 0 && et.NumField() == 0 {
			return typed(convertSlice(t, VoidListCodec))
		}
		if reflect.PointerTo(et).Implements(structType) {
			return structListRCodec(t)
		}
	}
	elem := reflectCodec(et)
	return rcodec{
		enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
			if v.IsNil() {
				return capnp.Ptr{}, nil
			}
			n := v.Len()
			if n >= 1<<29 {
				return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", n)
			}
			l, err := capnp.NewPointerList(seg, int32(n))
			if err != nil {
				return capnp.Ptr{}, err
			}
			for i := 0; i < n; i++ {
				p, err := elem.enc(e, seg, v.Index(i))
				if err != nil {
					return capnp.Ptr{}, err
				}
				if err := l.Set(i, p); err != nil {
					return capnp.Ptr{}, err
				}
			}
			return l.ToPtr(), nil
		},
		dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
			if !p.IsValid() {
				return nil
			}
			l, err := listOf(p)
			if err != nil {
				return err
			}
			if err := d.chargeElems(l.Len(), et.Size()); err != nil {
				return err
			}
			out := reflect.MakeSlice(t, l.Len(), l.Len())
			pl := capnp.PointerList(l)
			for i := 0; i < l.Len(); i++ {
				ep, err := pl.At(i)
				if err != nil {
					return err
				}
				if err := elem.dec(d, ep, out.Index(i)); err != nil {
					return err
				}
			}
			into.Set(out)
			return nil
		},
	}
}

// scalarRCodec is the codec of t, a slice of numbers whose kind is that
// of E (an enum type among them).
func scalarRCodec[E Scalar](t reflect.Type) rcodec {
	c := ScalarListCodec[E]()
	return rcodec{
		enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
			if v.IsNil() {
				return capnp.Ptr{}, nil
			}
			return c.Encode(e, seg, v.Convert(reflect.TypeFor[[]E]()).Interface().([]E))
		},
		dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
			x, err := c.Decode(d, p)
			if err == nil && x != nil {
				into.Set(reflect.ValueOf(x).Convert(t))
			}
			return err
		},
	}
}

func convertSlice[T any](t reflect.Type, c *Codec[T]) *Codec[T] {
	if t != reflect.TypeFor[T]() {
		panic(fmt.Sprintf("mp: %v is not the Go type of a Cap'n Proto list (use %v)", t, reflect.TypeFor[T]()))
	}
	return c
}

func structListRCodec(t reflect.Type) rcodec {
	et := t.Elem()
	return rcodec{
		enc: func(e *Encoder, seg *capnp.Segment, v reflect.Value) (capnp.Ptr, error) {
			if v.IsNil() {
				return capnp.Ptr{}, nil
			}
			n := v.Len()
			if n >= 1<<29 {
				return capnp.Ptr{}, fmt.Errorf("mp: list of %d elements is too long", n)
			}
			size := reflect.New(et).Interface().(Struct).CapnpSize()
			l, err := capnp.NewCompositeList(seg, size, int32(n))
			if err != nil {
				return capnp.Ptr{}, err
			}
			for i := 0; i < n; i++ {
				if err := v.Index(i).Addr().Interface().(Struct).EncodeCapnp(e, l.Struct(i)); err != nil {
					return capnp.Ptr{}, err
				}
			}
			return l.ToPtr(), nil
		},
		dec: func(d *Decoder, p capnp.Ptr, into reflect.Value) error {
			if !p.IsValid() {
				return nil
			}
			l, err := listOf(p)
			if err != nil {
				return err
			}
			if err := d.chargeElems(l.Len(), et.Size()); err != nil {
				return err
			}
			out := reflect.MakeSlice(t, l.Len(), l.Len())
			for i := 0; i < l.Len(); i++ {
				if err := out.Index(i).Addr().Interface().(Struct).DecodeCapnp(d, l.Struct(i)); err != nil {
					return err
				}
			}
			into.Set(out)
			return nil
		},
	}
}
