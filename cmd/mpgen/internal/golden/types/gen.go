// Package types is mpgen's code for testdata/types.capnp, which holds
// every type mpgen maps: a golden file (TestGolden) and the subject of the
// round-trip tests against capnpc-go's code for the same schema (typescg)
// and against the C++ reference (testdata/cpp).
package types

//go:generate go tool mpgen -out . ../../../testdata/types.capnp
