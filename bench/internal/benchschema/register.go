package benchschema

import "capnproto.org/go/capnp/v3/schemas"

// The generated code only offers RegisterSchema; registering here lets
// the RPC connection recognise Sink.push as a `-> stream` method (and
// bound the calls in flight) and protocol's call logs name methods.
func init() { RegisterSchema(schemas.DefaultRegistry) }
