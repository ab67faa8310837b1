#!/bin/sh
# Regenerates types.capnp.go with the capnp compiler and the capnpc-go
# pinned by go.mod's tool directive, as ../../../../../schema/gen.sh does.
# capnpc-go cannot generate List(Void) fields: they are AnyList here, the
# same pointer on the wire.
set -eu
std=$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
plugin=$(go tool -n capnpc-go)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/:List(Void)/:AnyList/' ../../../../testdata/types.capnp >"$tmp/types.capnp"
capnp compile -I "$std" --src-prefix="$tmp" -o "$plugin:." "$tmp/types.capnp"
