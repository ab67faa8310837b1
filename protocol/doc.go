// Package protocol runs Cap'n Proto RPC over a net.Conn: one side calls
// Connect and gets the other side's bootstrap capability as a proxy; the
// other side calls Serve (or Listen, for a listener) and offers a
// bootstrap capability made for that connection by a factory.
//
// The package is schema-agnostic. It moves a bootstrap capnp.Client and
// knows no interface; the typed wrappers (schema.Init(client), the
// generated X_Methods for servers) live in the layers above. Besides the
// connection itself it provides what every connection needs: cleanup
// hooks on a proxy and on a connection (AddCleanup), telling "the peer
// went away" from other errors (IsDisconnected, Conn.Err), a bound on
// the size of received messages, log lines for the connection's life
// and, on request, for every call (log/slog), and NewServer, which builds
// server capabilities whose methods cannot crash the process by
// panicking: a panic fails the call and ends the connection that
// delivered it.
//
// It leaves to others: making and checking sockets, spawning and
// reaping processes, peer credentials (package process); what a program
// serves and the facade it uses (packages ipc, init/...); and the
// schemas (package schema).
//
// # Calls and deadlocks
//
// go-capnp runs one call at a time per server object unless the method
// calls call.Go(). Methods that block, or that call out to another
// process (including back into their caller), must call call.Go() first,
// and a method that waits for a callback's answer must also watch its
// ctx, which is canceled when the connection ends.
//
// # The RPC connection
//
// The connection is this package's own implementation of the Cap'n Proto
// RPC protocol, Level 1 (package internal/rpcconn), on go-capnp's
// message layer, generated code and capnp.Client/server interfaces; no
// go-capnp rpc type appears in this package's API. No input from the
// peer can panic the process: a malformed or out-of-protocol message
// ends that connection with an Abort that says why. Limits (message
// size, segments, traversal, calls and bytes in flight) bound what a
// peer can make this side hold, and two timeouts bound how long it can
// make this side wait: for the rest of a message it started
// (Options.MessageTimeout) and for it to read what this side writes
// (Options.WriteTimeout). Every call that fails because its
// connection ended returns an error wrapping ErrDisconnected.
package protocol
