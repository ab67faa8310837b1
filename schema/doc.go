// Package schema holds the reference program's Cap'n Proto interfaces
// (the node and its wallet: Init, Chain, Node, WalletLoader, Wallet,
// Echo), and the plain Go interfaces, structs and proxies that mpgen
// generates from them.
//
// The .capnp files are the contract: clients in other languages find the
// interfaces by their file and type IDs, so IDs are fixed and methods are
// only ever appended with higher ordinals. The generated *.capnp.mp.go
// files are committed; `go generate ./schema` regenerates them with the
// capnp compiler (Debian package capnproto) and the mpgen that go.mod pins
// with a tool directive. Beside the generated code this package declares
// only the contract's version, its application name and the errors its
// methods return; implementations live in init/.
package schema

import "github.com/gomultiprocess/multiprocess/mp"

// Application names the reference program in the framework's handshake.
const Application = "multiprocess-demo"

// ProtocolVersion is the version of the contract that these schemas
// define. Processes exchange it in the framework's handshake (and the
// deprecated Init.hello) and refuse a peer whose version differs. Bump it
// on any change that an older peer would misunderstand.
const ProtocolVersion = 1

// Errors of the reference program's methods, declared so that they keep
// their identity across processes (errors.Is matches them on the caller's
// side).
var (
	// ErrNotServed is the error of the Init methods a process does not
	// serve (a wallet asked for makeNode, a node asked for
	// makeWalletLoader): an exception of type unimplemented.
	ErrNotServed = mp.NewErrorOfType(mp.Unimplemented, "demo.notServed", "not served by this process")
	// ErrNoWallet is the error of Node.walletLoader on a node that runs
	// without a wallet (-disablewallet).
	ErrNoWallet = mp.NewError("demo.noWallet", "this node runs without a wallet (-disablewallet)")
	// ErrNotLoaded is the error of WalletLoader.getWallet for a wallet
	// that exists but is not loaded.
	ErrNotLoaded = mp.NewError("demo.notLoaded", "wallet not loaded")
	// ErrShuttingDown is the error of calls that reach a process that is
	// stopping.
	ErrShuttingDown = mp.NewErrorOfType(mp.Overloaded, "demo.shuttingDown", "the process is shutting down")
)
