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
// Abort that says why. No goroutine is started per call or per message.
// Limits (message size, segments, traversal and depth, calls and bytes in
// flight, table sizes) are fields of Options with documented defaults.
//
// # Goroutines, and who reads
//
// Each connection runs a writer goroutine, which writes what the
// goroutines that queue messages do not write themselves, and one or two
// goroutines of its own that read (a third and more only while calls
// delivered on them are stuck in application code). Reading is a role
// that one goroutine holds at a time (role.go), so that a small call
// costs no goroutine handoff on either side:
//
//   - A caller of a direct call (Call.Send, package mp's path) that is
//     alone on the connection reads its own Return: it takes the role when
//     nobody reads (free) or when the connection's goroutine holding it is
//     busy in application code, handles whatever comes meanwhile (calls
//     from the peer are then delivered as usual, but not run inline), and
//     once its Return is in passes the role to another caller waiting, to
//     a connection goroutine if more is expected (questions open, bytes
//     buffered, the peer called in the last 100 ms), or to nobody.
//   - A connection goroutine reads whenever no caller does, and lets each
//     call it delivers run on it, inline (TakeInline: package mp's servers
//     do, once the call has its turn on its object), rather than handing
//     it to another goroutine. After it has handed a Return to a caller, it
//     leaves the role to callers if the peer has not called lately.
//   - Nobody reads while the role is free, or while its holder runs a call
//     inline (which may block: the wallet's getBalance waits for calls
//     that arrive on the same connection). A spare connection goroutine
//     takes the role once that has lasted 0.5 ms: a message waits unread
//     about 1 ms at most (Go's timers sleep in whole milliseconds), and
//     only when the peer has not called lately or a call blocks. The spare
//     watches with a timer while such states come and go: once per 0.5 ms
//     at most, not once per call. HandOff gives the reading away at once
//     (package mp does when a method waits for something else).
//   - A caller whose call ends otherwise than by its Return (its context
//     canceled) is pulled out of Read with a read deadline in the past;
//     the frame reader goes on where it stopped with the next holder.
//     Callers read only on connections whose rwc has SetReadDeadline.
//
// Every call that fails because the connection ended returns an error for
// which IsDisconnected and errors.Is(err, ErrDisconnected) are true.
//
// What is left to others: serving one object per connection, logging of
// calls, socket set-up (package protocol), and the panics of server
// methods (go-capnp's server package runs them in its own goroutines).
//
// Lock order: Conn.mu before Conn.qmu; the reading role's mutex is never
// held with either. Each is taken only through a method that returns the
// type the methods needing it are defined on (lockedconn.go): Conn.lock a
// lockedConn, Conn.lockQueue a lockedQueue, Conn.lockRole a lockedRole. No lock of this package is held
// while calling application code or anything that may call back into a
// ClientHook of this package (Client.Release, Message.Release,
// Promise.Resolve, Client.RecvCall): such work is collected under the lock
// and run after it is released.
package rpcconn
