// Package typescg is capnpc-go's code for testdata/types.capnp, which the
// round-trip tests of package types compare mpgen's code with.
package typescg

//go:generate sh gen.sh
