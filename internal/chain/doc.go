// Package chain is the node's toy block chain: blocks with a height, a
// SHA-256 hash over their contents, a time and a list of payouts, kept in
// a bbolt database that survives restarts and crashes, and followers that
// are handed each block in order, one at a time.
//
// It knows nothing of Cap'n Proto or of processes: init/node serves it
// over IPC and delivers what followers receive to the wallet.
package chain
