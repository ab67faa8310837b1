// Package testschema holds Cap'n Proto interfaces used only by package
// protocol's tests, and the Go code capnpc-go generates from them.
package testschema

//go:generate sh ../capnpc-go.sh
