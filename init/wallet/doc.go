// Package wallet is the wallet executable's program: the Init it serves,
// the capabilities a node gets from the wallet process it spawned, and
// Main, the executable's command line.
//
// makeWalletLoader(settings, chain) starts the process's walletDatabase
// and chainNotifications subsystems (stopped in reverse order at
// shutdown) and returns the WalletLoader. Each loaded wallet subscribes to
// the node's chain from the block after the last one it applied, and
// its blockConnected returns only once the block is committed, so no
// block is missed or counted twice across restarts and crashes of either
// process. getBalance and listTransactions first catch up with the
// chain's tip by calling back into the node.
//
// Main runs the wallet spawned by a node (-ipcfd: Spawned) or, run by
// hand, the user's tool that reaches the wallet process through a node's
// -ipcbind socket (getbalance, getnewaddress, listtransactions,
// listwallets, generate N). The wallet store is package
// internal/walletdb's; cmd/wallet only calls Main; the IPC mechanics are
// package ipc's.
package wallet
