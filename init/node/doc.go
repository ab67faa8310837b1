// Package node is the node executable's program: the Init it serves to
// processes that connect to it, and Run, which spawns the wallet child,
// calls it, and serves -ipcbind clients until told to stop. The executable
// itself (flags, signals, logging) is cmd/node; the IPC mechanics are
// package ipc's.
package node
