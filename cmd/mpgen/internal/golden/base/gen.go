// Package base is mpgen's code for testdata/base.capnp: interfaces that
// package derived extends from another Go package.
package base

//go:generate go tool mpgen -out . ../../../testdata/base.capnp
