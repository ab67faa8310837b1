package mp

import "sync"

// instanceMu serializes the making of generic interfaces' instances, so
// that each is made once and published complete.
var instanceMu sync.Mutex

// Instantiate returns the description of I, an instance of a generic
// interface (Foo[string]), making it on first use with the methods it
// serves (its own, then its ancestors'). The FooInterface[T]() function
// generated for a generic interface calls it when InterfaceFor[I]()
// finds none. Unlike NewInterface followed by AddMethods, the
// description is published only once its methods are in, as instances
// are made while other goroutines may look them up.
func Instantiate[I any](id uint64, name string, newProxy func(*Client) I, methods ...[]ServerMethod) *Interface[I] {
	instanceMu.Lock()
	defer instanceMu.Unlock()
	if x := InterfaceFor[I](); x != nil {
		return x
	}
	d := &dispatch{id: id, name: name, methods: make(map[methodKey]*ServerMethod)}
	x := &Interface[I]{disp: d, newProxy: newProxy}
	x.codec = Codec[I]{Encode: x.encode, Decode: x.decode}
	x.AddMethods(methods...)
	registerInterface[I](x)
	return x
}
