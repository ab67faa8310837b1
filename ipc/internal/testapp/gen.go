// Package testapp is the Init of package ipc's tests (testapp.capnp), the
// code mpgen generates from it, and Server, the Init the tests serve: a
// small application of their own, so that the framework's tests know
// nothing of the reference program.
package testapp

//go:generate go tool mpgen testapp.capnp
