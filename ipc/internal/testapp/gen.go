// Package testapp is the Init of package ipc's tests (testapp.capnp) and
// the code mpgen generates from it.
package testapp

//go:generate go tool mpgen testapp.capnp
