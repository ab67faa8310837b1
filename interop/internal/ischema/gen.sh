#!/bin/sh
# Regenerates interop.capnp.go as internal/capnpc-go.sh does, with the
# module root on the import path: interop.capnp imports /schema/*.capnp.
set -eu
std=$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
plugin=$(go tool -n capnpc-go)
capnp compile -I "$std" -I ../../.. -o "$plugin:." interop.capnp
