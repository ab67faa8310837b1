// Package mpproxy is mpgen's code for testdata/mp/proxy.capnp, a
// stand-in for libmultiprocess's proxy.capnp.
package mpproxy

//go:generate go tool mpgen -out . ../../../testdata/mp/proxy.capnp
