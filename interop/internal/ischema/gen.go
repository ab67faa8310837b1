// Package ischema holds the Cap'n Proto interfaces that only package
// interop's tests use, and the Go code capnpc-go generates from them. The
// C++ peers compile the same interop.capnp at test time.
package ischema

//go:generate sh gen.sh
