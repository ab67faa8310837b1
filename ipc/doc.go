// Package ipc is the facade a program uses to split itself into processes,
// Bitcoin Core's interfaces::Ipc in Go.
//
// A controlling process calls [Ipc.SpawnProcess] to start a sibling
// executable with one end of a socketpair and get back a typed
// [schema.Init] proxy whose calls run in the child. The spawned executable
// calls [Ipc.StartSpawnedProcess] first thing in main; when its arguments
// say it was spawned, it serves its own Init on the inherited socket until
// the parent goes away and tells main which exit status to return.
// [Ipc.ListenAddress] and [Ipc.ConnectAddress] do the same over unix
// sockets for processes that were not spawned.
//
// Releasing an Init proxy ends its connection; for a spawned child that
// also stops the child: it exits when its socket closes, and is killed if
// it has not within the shutdown timeout, and is always reaped. Hooks
// registered with [Ipc.AddCleanup] run when a proxy is released or its
// connection is lost, whichever comes first.
//
// The operating-system mechanics (socketpairs, spawning, waiting,
// addresses) live in package process and the RPC mechanics in package
// protocol; this package ties them to the schema's Init and leaves the
// implementation of Init to each executable (see init/).
package ipc
