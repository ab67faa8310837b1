// Package rpcmsg builds and reads raw Cap'n Proto RPC messages, for tests
// that play a misbehaving peer: a peer that sends what a well-behaved one
// never would (calls on unknown capabilities, duplicate Finishes, null
// bodies, frame headers that lie) and reads back what the other side says,
// down to the reason of its Abort.
//
// It is built on go-capnp's capnp and std/capnp/rpc packages only, and
// knows nothing of this module's own RPC: it must not import protocol or
// internal/rpcconn, so that rpcconn's in-package tests can use it
// without an import cycle. Sending the bytes, timing and the assertions
// are left to the tests.
//
// A build function that fails (go-capnp refusing an allocation) panics:
// such a failure is a bug in the test, never the peer's behaviour.
package rpcmsg
