#!/bin/sh
# Regenerates the Go code for the .capnp files in this directory with the
# capnp compiler and the capnpc-go pinned by go.mod's tool directive.
set -eu
std=$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
plugin=$(go tool -n capnpc-go)
capnp compile -I "$std" -o "$plugin:." *.capnp
