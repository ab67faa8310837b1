// Package node is mpgen's code for the schemas in testdata/node, written
// in the style of Bitcoin Core's (no Go annotations, /mp/proxy.capnp and
// /capnp/c++.capnp imports, generics); several files in one package.
package node

//go:generate go tool mpgen -out . -I ../../../testdata -M /mp/proxy.capnp=github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/mpproxy ../../../testdata/node/common.capnp ../../../testdata/node/echo.capnp ../../../testdata/node/init.capnp ../../../testdata/node/mining.capnp
