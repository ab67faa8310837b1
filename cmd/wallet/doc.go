// Command wallet is the wallet process. Spawned by a node with -ipcfd, it
// serves the wallet's Init on the inherited socket until the node goes
// away. Run by hand with a command (getbalance, getnewaddress,
// listtransactions, listwallets, generate N), it is the user's tool: it
// connects to a node started with -ipcbind and reaches the wallet process
// through the node.
//
// The program is package init/wallet's Main; main only calls it, so that
// a test binary can be the wallet too.
package main
