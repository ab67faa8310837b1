// Package collide is mpgen's code for testdata/collide.capnp, whose names
// collide in Go.
package collide

//go:generate go tool mpgen -out . ../../../testdata/collide.capnp
