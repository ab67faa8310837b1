package capnpschema

import "capnproto.org/go/capnp/v3/schemas"

// The generated code only offers RegisterSchema; registering here lets
// protocol's call logs name interfaces and methods instead of showing IDs,
// and the RPC connection recognise `-> stream` methods (LifetimeListener.
// event), whose calls in flight it bounds.
func init() { RegisterSchema(schemas.DefaultRegistry) }
