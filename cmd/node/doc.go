// Command node is the controlling process: it spawns its wallet as a child
// process, calls it through Cap'n Proto RPC, and accepts other processes on
// -ipcbind, until SIGINT or SIGTERM.
package main
