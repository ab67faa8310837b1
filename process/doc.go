// Package process is the operating-system half of multiprocess: it starts a
// child executable with one end of a socketpair as its descriptor 3
// ([Spawn]), waits for it, signals it and stops it ([Child]), and, on the
// child's side, recognises the "-ipcfd N" command line ([CheckSpawned]) and
// turns the inherited descriptor into a connection ([SocketConn]). It also
// parses the unix-socket addresses of -ipcbind and -ipcconnect, binds and
// dials them, checks a peer's uid, and locks a data directory.
//
// It knows nothing of Cap'n Proto: everything here moves plain bytes over a
// [net.Conn], and package protocol runs RPC on the connections it returns.
// Deciding which processes to start, what they serve and when they stop is
// left to package ipc.
//
// Linux only: it relies on SOCK_CLOEXEC, /proc/self/fd and SO_PEERCRED.
//
// Only the socket reaches a spawned child. Go opens its own descriptors with
// close-on-exec, but descriptors this process itself inherited do not have
// the flag, so [Spawn] marks them with [MarkInheritedCloseOnExec] first.
package process
