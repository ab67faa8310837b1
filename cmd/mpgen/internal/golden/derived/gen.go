// Package derived is mpgen's code for testdata/derived.capnp, whose
// interfaces extend those of package base and one another; its tests call
// them through proxies.
package derived

//go:generate go tool mpgen -out . -M base.capnp=github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/base ../../../testdata/derived.capnp
