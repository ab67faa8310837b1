// Package peerpb holds the gRPC peer's service (peer.proto) and the code
// protoc-gen-go and protoc-gen-go-grpc generate from it.
package peerpb

//go:generate sh gen.sh
