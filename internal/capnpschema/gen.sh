#!/bin/sh
# Regenerates capnpc-go's Go code for the reference program's schemas
# (../../schema) and the framework's lifetime schema (../../ipc/control),
# for the code that still uses go-capnp's generated API: the tests of the
# capnpc-go path in rpcconn, protocol, bench and interop. The module's
# root is an import directory: schemas import the framework's as
# "/ipc/control/lifetime.capnp".
set -eu
std=$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
plugin=$(go tool -n capnpc-go)
capnp compile -I "$std" -I ../.. --src-prefix=../.. -o "$plugin:." ../../schema/*.capnp ../../ipc/control/lifetime.capnp
mv schema/*.capnp.go ipc/control/*.capnp.go .
rmdir schema ipc/control ipc
