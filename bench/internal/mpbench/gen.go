// Package mpbench holds the interfaces of package bench's generated path
// (mpbench.capnp) and the code mpgen generates from them: the Init that
// the benchmark child serves through package ipc, an Echo, a streaming
// Sink, and the child's resource figures.
package mpbench

//go:generate go tool mpgen mpbench.capnp
