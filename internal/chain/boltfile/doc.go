// Package boltfile opens bbolt databases that a daemon can trust: it checks
// a file before bbolt maps it, creates new files so that a crash never
// leaves a half-made one under the real name, and guards every transaction
// so that damage bbolt meets later becomes an error naming the file rather
// than a panic or a fault that ends the process.
//
// The check reads the file with pread and never maps it. It walks bbolt's
// format (the two meta pages, the free list, every page of every bucket)
// with bounds on everything it follows, so that no damage can make it
// crash, loop or allocate without limit. bbolt's own Tx.Check cannot be
// used for this: it follows page numbers and key offsets into its memory
// map from a goroutine of its own, so a key offset pointing outside the map
// kills the process with a fault (TestBboltCheckFaultsWhereOursReports),
// and on a branch page that names itself it never ends (stopped after five
// minutes by hand).
//
// What the stores keep in their buckets is theirs to check: a *DB hands
// them transactions, and an error made with Damage marks the file damaged
// just as a panic inside bbolt does. After damage is found, every call
// returns the same error without touching the file again.
//
// It lives beside internal/chain for now because only the chain and the
// wallet stores use it; nothing in it is specific to either.
package boltfile
