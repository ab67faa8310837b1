// Command node is the controlling process: it keeps the chain, spawns its
// wallet as a child process and calls it (and is called back) through
// Cap'n Proto RPC, produces blocks on request or on -blockinterval, and
// accepts other processes on -ipcbind, until SIGINT or SIGTERM.
//
// The program is package init/node's Main (flags, signals, logging) and
// Roles (the wallet role the node binary plays when there is no wallet
// executable next to it); main only dispatches to them, so that a test
// binary can be the node too.
package main
