//go:build race

package rpcconn

const raceEnabled = true
