// Package mptestschema holds the interfaces of package mp's own tests
// (mptest.capnp) and the code mpgen generates from them.
package mptestschema

//go:generate go tool mpgen mptest.capnp
