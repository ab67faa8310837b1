// Package chainwire converts the chain's blocks to and from their Cap'n
// Proto form (schema.Block), for init/node, which sends them, and
// init/wallet, which receives them. The domain types are package chain's.
package chainwire
