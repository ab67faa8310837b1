// Package benchschema holds the Cap'n Proto interfaces used only by
// package bench's benchmarks, and the Go code capnpc-go generates from
// them.
package benchschema

//go:generate sh ../../../internal/capnpc-go.sh
