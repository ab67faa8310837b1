// Command wallet is the wallet process. Spawned by a node with -ipcfd, it
// serves the wallet's Init on the inherited socket until the node goes
// away.
package main
