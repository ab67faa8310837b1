// Package ipc is the facade a program uses to split itself into
// processes, Bitcoin Core's interfaces::Ipc in Go, for whatever Init
// interface the program defines in its own schema.
//
// A program describes its processes' bootstrap interface, its Init, in a
// .capnp file of its own and generates Go for it with mpgen. Each process
// makes one Ipc for that Init ([New]) with the function that makes the
// Init it serves. The controlling process calls [Ipc.SpawnProcess] to
// start a child (a sibling executable, an explicit path, or this very
// binary in another role: see [RunRole]) with one end of a socketpair, and
// gets back the child's Init as a plain Go value whose calls run in the
// child. The child calls [Ipc.StartSpawnedProcess] first thing in main;
// when it was spawned, it serves its Init on the inherited socket until
// its parent lets it go, and tells main which status to exit with.
// [Ipc.ListenAddress] and [Ipc.ConnectAddress] do the same over unix
// sockets for processes that were not spawned.
//
// # The control channel
//
// Beside the application's Init, the bootstrap capability of every
// process answers the framework's own Control interface (package
// ipc/control), told apart by its type ID: a version handshake, a graceful
// stop, and a stream of lifetime events (after dcrd's). Any Cap'n Proto
// peer bootstraps the application's Init as usual; a peer that does not
// answer Control (a C++ or Python program, libmultiprocess) answers its
// calls "unimplemented", which means: no handshake, no lifetime events,
// and it is stopped by closing the connection. The first control calls
// travel with the first application calls, so finding out costs no round
// trip.
//
// # Children and supervision
//
// Releasing the Init of a spawned child ([mp.Release]) stops the child:
// it is asked to stop, given Options.ShutdownTimeout to exit, then killed,
// and always reaped. [Ipc.OnExit] tells how and when a child ended;
// [Ipc.Supervise] restarts a child that exits, under a [RestartPolicy],
// running the program's setup on each new child.
//
// The operating-system mechanics (socketpairs, spawning, waiting,
// addresses) live in package process and the RPC mechanics in packages
// protocol and mp; this package ties them to the application's Init.
package ipc
