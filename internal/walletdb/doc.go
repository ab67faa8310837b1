// Package walletdb is a wallet's store: its receiving addresses, the
// payouts it received and the last block it applied, in a bbolt database
// of its own (<datadir>/wallets/<name>.db) that survives restarts and
// crashes. Each block is applied in one transaction together with the
// record of having applied it, so a block is counted exactly once
// however the process ends.
//
// Damage to the file is an error that names it, never a panic: Open checks
// the whole file before bbolt maps it, and damage met later (bbolt
// panicking or faulting, records that do not decode or add up) becomes a
// *DamagedError, which every later call returns without touching the file
// again (see internal/chain/boltfile).
//
// It knows nothing of Cap'n Proto or of processes: init/wallet serves it
// over IPC and feeds it the blocks the node announces.
package walletdb
