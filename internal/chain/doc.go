// Package chain is the node's toy block chain: blocks with a height, a
// SHA-256 hash over their contents, a time and a list of payouts, kept in
// a bbolt database that survives restarts and crashes, and followers that
// are handed each block in order, one at a time.
//
// Damage to the file is an error that names it, never a panic: Open checks
// the whole file before bbolt maps it, and damage met later (bbolt
// panicking or faulting, a block that does not match its hash) becomes a
// *DamagedError, which every later call returns without touching the file
// again. Package boltfile does the checking and the guarding for both
// stores.
//
// It knows nothing of Cap'n Proto or of processes: init/node serves it
// over IPC and delivers what followers receive to the wallet.
package chain
