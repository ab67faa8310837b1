//go:build !race

package rpcconn

const raceEnabled = false
