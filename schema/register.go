package schema

import "capnproto.org/go/capnp/v3/schemas"

// The generated code only offers RegisterSchema; registering here lets
// protocol's call logs name interfaces and methods instead of showing IDs.
func init() { RegisterSchema(schemas.DefaultRegistry) }
