// Package schema holds the Cap'n Proto interfaces that the executables
// serve and call across process boundaries, and the Go code capnpc-go
// generates from them.
//
// The .capnp files are the contract: clients in other languages find the
// interfaces by their file and type IDs, so IDs are fixed and methods are
// only ever appended with higher ordinals. The generated *.capnp.go files
// are committed; `go generate ./schema` regenerates them with the capnp
// compiler (Debian package capnproto) and the capnpc-go that go.mod pins
// with a tool directive. This package contains no hand-written logic
// beyond ProtocolVersion; implementations live in init/ and the RPC
// mechanics in protocol/.
package schema

// ProtocolVersion is the version of the contract that these schemas
// define. Executables exchange it through Init.hello and refuse a peer
// whose version differs. Bump it on any change that an older peer would
// misunderstand.
const ProtocolVersion = 1
