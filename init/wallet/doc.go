// Package wallet is what the wallet executable serves as its Init: the
// capabilities a node gets from the wallet process it spawned. The
// executable itself (flags, signals, logging) is cmd/wallet; the IPC
// mechanics are package ipc's.
package wallet
