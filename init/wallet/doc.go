// Package wallet is what the wallet executable serves as its Init: the
// capabilities a node gets from the wallet process it spawned.
//
// makeWalletLoader(settings, chain) starts the process's walletDatabase
// and chainNotifications subsystems (stopped in reverse order at
// shutdown) and returns the WalletLoader. Each loaded wallet subscribes to
// the node's chain from the block after the last one it applied, and
// its blockConnected returns only once the block is committed, so no
// block is missed or counted twice across restarts and crashes of either
// process. getBalance and listTransactions first catch up with the
// chain's tip by calling back into the node. The wallet store is package
// internal/walletdb's; the executable is cmd/wallet; the IPC mechanics
// are package ipc's.
package wallet
