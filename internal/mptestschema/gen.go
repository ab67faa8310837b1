// Package mptestschema holds the interfaces of the tests of packages mp
// and protocol (mptest.capnp) and the code mpgen generates from them.
package mptestschema

//go:generate go tool mpgen mptest.capnp
