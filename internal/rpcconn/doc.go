// Package rpcconn is an implementation of the Cap'n Proto RPC protocol,
// Level 1, on go-capnp's message layer: capnp.Message, the generated types
// of rpc.capnp, and capnp.Client with its ClientHook, Send, Recv, Returner
// and PipelineCaller interfaces, so that capnpc-go's generated client and
// server code runs unchanged on top of it. It replaces go-capnp's rpc
// package, which a peer can crash with a few bytes.
//
// The cardinal rule: no input from the peer can panic, deadlock or leak.
// Every message is validated before it touches a table; a malformed,
// out-of-order or out-of-protocol message ends the connection with an
// Abort that says why. Each connection runs exactly two goroutines, a
// reader and a writer; no goroutine is started per call or per message.
// Limits (message size, segments, traversal and depth, calls and bytes in
// flight, table sizes) are fields of Options with documented defaults.
//
// Every call that fails because the connection ended returns an error for
// which IsDisconnected and errors.Is(err, ErrDisconnected) are true.
//
// What is left to others: serving one object per connection, logging of
// calls, socket set-up (package protocol), and the panics of server
// methods (go-capnp's server package runs them in its own goroutines).
//
// Lock order: Conn.mu before Conn.qmu. No lock of this package is held
// while calling application code or anything that may call back into a
// ClientHook of this package (Client.Release, Message.Release,
// Promise.Resolve, Client.RecvCall): such work is collected under the lock
// and run after it is released.
package rpcconn
