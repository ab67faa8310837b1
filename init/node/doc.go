// Package node is the node executable's program: the Init it serves to
// processes that connect to it; Run, which opens the chain, spawns the
// wallet child and hands it the chain, produces blocks, and serves
// -ipcbind clients until told to stop; and Main, the executable's command
// line (flags, signals, logging) around Run, with Roles for the node
// binary spawned as its own wallet.
//
// The node's Init serves makeNode (the Node control interface) and
// makeChain (the Chain, whose handleNotifications delivers each block to
// a subscriber, one blockConnected call at a time, waiting for each to
// return). Node.walletLoader forwards the wallet child's WalletLoader, so
// that a client of the node reaches a capability that lives in the
// wallet process. The chain itself is package internal/chain's; cmd/node
// only calls Main; the IPC mechanics are package ipc's.
package node
