package rpcconn

import (
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/schemas"
	"capnproto.org/go/capnp/v3/std/capnp/schema"
	"capnproto.org/go/capnp/v3/std/capnp/stream"
)

// StreamWindow is how many calls to `-> stream` methods may be in flight
// on a connection (sent, and their answers not yet released): the next
// one waits. go-capnp's Client.SendStreamCall starts a goroutine per call
// that lives until the call's answer is released, so this bounds those
// goroutines too; MaxCalls alone would allow 1024 of them. Streaming
// methods are recognised by their results type (stream.capnp's
// StreamResult) in the schemas registered with go-capnp's
// schemas.DefaultRegistry: capnpc-go's code only offers RegisterSchema, so
// the package holding the generated code must call it (package schema
// does, in an init function); calls to a stream method of an interface
// that is not registered are bounded by MaxCalls only.
//
// Whether a method streams is looked up only for calls made while at
// least streamLookupMin calls are in flight (the first lookup in a
// schema file costs a few hundred microseconds), so up to StreamWindow +
// streamLookupMin streamed calls may be in flight.
//
// Each of those goroutines outlives the release of its answer a little:
// it then takes the client's state mutex, which a fast sender holds
// often. With 64, 20 to 60 of them piled up there and the process went
// past 100 goroutines in most runs of bench's Stream64B; 48 keeps it
// under, at the same rate.
const StreamWindow = 48

const streamLookupMin = 8

type methodKey struct {
	iface  uint64
	method uint16
}

// streamMethods caches, by method, whether it is declared `-> stream`.
var streamMethods struct {
	sync.RWMutex
	m      map[methodKey]bool
	ifaces map[uint64]bool // interfaces looked up
}

// isStreamMethod reports whether m is declared `-> stream` in a
// registered schema.
func isStreamMethod(m capnp.Method) bool {
	k := methodKey{m.InterfaceID, m.MethodID}
	streamMethods.RLock()
	v, ok := streamMethods.m[k]
	looked := streamMethods.ifaces[m.InterfaceID]
	streamMethods.RUnlock()
	if ok || looked {
		return v
	}
	found := lookupStreamMethods(m.InterfaceID)
	streamMethods.Lock()
	defer streamMethods.Unlock()
	if streamMethods.m == nil {
		streamMethods.m = make(map[methodKey]bool)
		streamMethods.ifaces = make(map[uint64]bool)
	}
	if !streamMethods.ifaces[m.InterfaceID] {
		streamMethods.ifaces[m.InterfaceID] = true
		for _, id := range found {
			streamMethods.m[methodKey{m.InterfaceID, id}] = true
		}
	}
	return streamMethods.m[k]
}

// lookupStreamMethods returns the ordinals of interface id's streaming
// methods, from the registered schemas.
func lookupStreamMethods(id uint64) []uint16 {
	node, ok := FindInterface(id)
	if !ok {
		return nil
	}
	var out []uint16
	methods, err := node.Interface().Methods()
	if err != nil {
		return nil
	}
	for j := 0; j < methods.Len(); j++ {
		if methods.At(j).ResultStructType() == stream.StreamResult_TypeID {
			out = append(out, uint16(j))
		}
	}
	return out
}

// FindInterface returns the schema node of interface id from the schemas
// registered with go-capnp's schemas.DefaultRegistry, and false if none
// is. The first look-up in a schema file decompresses it (a few hundred
// microseconds): keep it off start-up paths.
func FindInterface(id uint64) (schema.Node, bool) {
	data := schemas.Find(id)
	if data == nil {
		return schema.Node{}, false
	}
	msg, err := capnp.Unmarshal(data)
	if err != nil {
		return schema.Node{}, false
	}
	req, err := schema.ReadRootCodeGeneratorRequest(msg)
	if err != nil {
		return schema.Node{}, false
	}
	nodes, err := req.Nodes()
	if err != nil {
		return schema.Node{}, false
	}
	for i := 0; i < nodes.Len(); i++ {
		if node := nodes.At(i); node.Id() == id && node.Which() == schema.Node_Which_interface {
			return node, true
		}
	}
	return schema.Node{}, false
}
