package mp

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// A Method describes one method of an interface, for the code that calls
// it, the code that serves it, and logs.
type Method struct {
	InterfaceID   uint64
	MethodID      uint16
	InterfaceName string // as in the schema: "Chain"
	MethodName    string // as in the schema: "height"
	ParamsSize    capnp.ObjectSize
	ResultsSize   capnp.ObjectSize
	// Stream says that the method is declared `-> stream`.
	Stream bool
}

func (m *Method) String() string { return m.InterfaceName + "." + m.MethodName }

func (m *Method) capnp() capnp.Method {
	return capnp.Method{InterfaceID: m.InterfaceID, MethodID: m.MethodID, InterfaceName: m.InterfaceName, MethodName: m.MethodName}
}

// A ServerMethod is a Method with the generated function that serves it:
// Serve reads the parameters from call, calls the method of impl (a value
// of the interface's Go type) and writes its results into call.
type ServerMethod struct {
	Method *Method
	Serve  func(ctx context.Context, impl any, call *ServerCall) error
}

type methodKey struct {
	iface  uint64
	method uint16
}

// dispatch is what serving one interface needs, whatever its Go type.
type dispatch struct {
	id      uint64
	name    string
	methods map[methodKey]*ServerMethod
	own     []*ServerMethod // the interface's own methods by ordinal (nil where none): no map look-up per call
}

func (d *dispatch) lookup(iface uint64, method uint16) *ServerMethod {
	if iface == d.id && int(method) < len(d.own) {
		if m := d.own[method]; m != nil {
			return m
		}
	}
	return d.methods[methodKey{iface, method}]
}

// add adds m to the methods served.
func (d *dispatch) add(m *ServerMethod) {
	d.methods[methodKey{m.Method.InterfaceID, m.Method.MethodID}] = m
	if id := int(m.Method.MethodID); m.Method.InterfaceID == d.id && id < 1024 {
		for len(d.own) <= id {
			d.own = append(d.own, nil)
		}
		d.own[id] = m
	}
}

// An Interface is the runtime's description of a generated interface I:
// generated code declares one per interface (FooInterface) and uses it to
// write and read capabilities of type I.
type Interface[I any] struct {
	disp     *dispatch
	newProxy func(*Client) I
	codec    Codec[I]
}

// NewInterface describes the interface with type ID id and schema name
// name, whose Go type is I; newProxy wraps a Client in the generated
// proxy type. Generated code calls it once per interface, and then
// AddMethods.
func NewInterface[I any](id uint64, name string, newProxy func(*Client) I) *Interface[I] {
	d := &dispatch{id: id, name: name, methods: make(map[methodKey]*ServerMethod)}
	x := &Interface[I]{disp: d, newProxy: newProxy}
	x.codec = Codec[I]{Encode: x.encode, Decode: x.decode}
	registerInterface[I](x)
	return x
}

// AddMethods adds the methods the interface serves: its own, and those
// of every interface it extends. Generated code calls it once, during
// package initialization (`var _ = XInterface.AddMethods(...)`, which
// lets Go order it after the tables, whose serve functions refer to the
// interfaces they encode).
func (x *Interface[I]) AddMethods(lists ...[]ServerMethod) struct{} {
	for _, methods := range lists {
		for i := range methods {
			x.disp.add(&methods[i])
		}
	}
	return struct{}{}
}

// ID returns the interface's type ID.
func (x *Interface[I]) ID() uint64 { return x.disp.id }

// Name returns the interface's name in its schema.
func (x *Interface[I]) Name() string { return x.disp.name }

// Codec returns the codec of capabilities of type I, for lists of them
// and type parameters.
func (x *Interface[I]) Codec() *Codec[I] { return &x.codec }

// Set sets pointer i of s to the capability v: a new reference to it in
// the message's capability table, or null if v is nil.
func (x *Interface[I]) Set(e *Encoder, s capnp.Struct, i uint16, v I) error {
	p, err := x.encode(e, s.Segment(), v)
	if err != nil {
		return err
	}
	return s.SetPtr(i, p)
}

// Get reads pointer i of s as a capability of type I: the local value
// itself if it is one of this process's values that implements I, else a
// proxy (which the caller releases, or which belongs to the call that
// lends it: see the package's rule). Null reads as nil.
func (x *Interface[I]) Get(d *Decoder, s capnp.Struct, i uint16) (I, error) {
	p, err := ptr(s, i)
	if err != nil {
		var zero I
		return zero, err
	}
	return x.decode(d, p)
}

func (x *Interface[I]) encode(e *Encoder, seg *capnp.Segment, v I) (capnp.Ptr, error) {
	if p, ok := any(v).(proxy); ok && p.MPClient() != nil {
		e.handOver(p.MPClient())
	}
	cl := x.Capnp(v)
	if !cl.IsValid() {
		return capnp.Ptr{}, nil
	}
	id := seg.Message().CapTable().Add(cl)
	return capnp.NewInterface(seg, id).ToPtr(), nil
}

func (x *Interface[I]) decode(d *Decoder, p capnp.Ptr) (I, error) {
	var zero I
	if !p.IsValid() {
		return zero, nil
	}
	iface := p.Interface()
	if !iface.IsValid() {
		return zero, fmt.Errorf("mp: %s field does not point to a capability", x.disp.name)
	}
	if err := d.Charge(int64(unsafe.Sizeof(Client{}))); err != nil {
		return zero, err
	}
	cl := iface.Client()
	if !cl.IsValid() {
		return zero, nil
	}
	if v, ok := localValue[I](cl); ok {
		return v, nil
	}
	c := newClient(cl.AddRef(), d.conn)
	d.lend(c)
	return x.newProxy(c), nil
}

// FromCapnp returns the capability cl as an I, taking over the caller's
// reference: the local value behind it if it is one (the reference is
// then released), else a proxy that releases it on Close.
func (x *Interface[I]) FromCapnp(cl capnp.Client) I {
	if v, ok := localValue[I](cl); ok {
		cl.Release()
		return v
	}
	return x.newProxy(newClient(cl, nil))
}

// Capnp returns a new reference to v as a go-capnp client, for code
// written against go-capnp's API (capnpc-go's generated code, package
// protocol): the proxy's own capability, or a server for a local value.
// A nil v gives the null client.
func (x *Interface[I]) Capnp(v I) capnp.Client {
	a := any(v)
	if a == nil {
		return capnp.Client{}
	}
	if p, ok := a.(proxy); ok {
		c := p.MPClient()
		if c == nil {
			return capnp.Client{}
		}
		return c.ref()
	}
	if rv := reflect.ValueOf(a); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return capnp.Client{}
	}
	return serve(a, x.disp)
}

// FromClient wraps c, a Client made by the runtime (a Pipeline's Field),
// in the generated proxy type, which takes it over.
func (x *Interface[I]) FromClient(c *Client) I { return x.newProxy(c) }

// Broken returns a proxy of type I whose every call fails with err.
func (x *Interface[I]) Broken(err error) I {
	return x.newProxy(newClient(capnp.ErrorClient(err), nil))
}

// proxy is implemented by generated proxy types.
type proxy interface {
	MPClient() *Client
}

// localValue returns the value of type I that cl is a server for, if cl
// is served by this package in this process.
func localValue[I any](cl capnp.Client) (I, bool) {
	var zero I
	snap := cl.Snapshot()
	defer snap.Release()
	h, ok := snap.Brand().Value.(*serverHook)
	if !ok {
		return zero, false
	}
	if v, ok := h.impl.(I); ok {
		return v, true
	}
	for _, f := range h.facets {
		if v, ok := f.impl.(I); ok {
			return v, true
		}
	}
	return zero, false
}

// interfaces maps the Go types of generated interfaces to their
// descriptions, for CodecFor.
var interfaces sync.Map // reflect.Type -> *Interface[I]

func registerInterface[I any](x *Interface[I]) {
	interfaces.Store(reflect.TypeFor[I](), x)
}

// InterfaceFor returns the description of the generated interface type
// I, or nil if no generated code has declared it.
func InterfaceFor[I any]() *Interface[I] {
	v, ok := interfaces.Load(reflect.TypeFor[I]())
	if !ok {
		return nil
	}
	return v.(*Interface[I])
}
