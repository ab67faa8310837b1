// Command node is the controlling process: it keeps the chain, spawns its
// wallet as a child process and calls it (and is called back) through
// Cap'n Proto RPC, produces blocks on request or on -blockinterval, and
// accepts other processes on -ipcbind, until SIGINT or SIGTERM.
package main
