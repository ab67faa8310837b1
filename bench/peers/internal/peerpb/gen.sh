#!/bin/sh
# Regenerates peer.pb.go and peer_grpc.pb.go with protoc (Debian package
# protobuf-compiler) and the protoc-gen-go and protoc-gen-go-grpc pinned by
# the peers module's tool directive.
set -eu
protoc \
	--plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
	--plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	peer.proto
