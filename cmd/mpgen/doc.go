// Command mpgen is a Cap'n Proto compiler plugin that turns schemas into
// plain Go: each interface becomes a Go interface whose methods take and
// return ordinary Go values (`Height(ctx) (uint64, error)`), with a proxy
// that calls it through a connection and a server table that serves any
// Go value implementing it; each struct becomes a Go struct that encodes
// itself. The generated code calls the runtime package
// github.com/gomultiprocess/multiprocess/mp; SPEC.md in this folder is
// the contract between the two.
//
// mpgen needs no Go annotations: schemas written for other languages
// (Bitcoin Core's, libmultiprocess's mp/proxy.capnp) are taken as they
// are. Annotations ($Go.*, $Cxx.*, $Proxy.*) are ignored.
//
// # Running it
//
// As a driver, which is what a //go:generate line uses:
//
//	//go:generate go tool mpgen -I ../schemas chain.capnp wallet.capnp
//
// mpgen runs `capnp compile -o-` itself, with go-capnp's std folder on
// the import path (so that /capnp/c++.capnp and /go.capnp resolve), and
// writes chain.capnp.mp.go and wallet.capnp.mp.go next to the schemas, or
// into the folder given by -out. The files of one run form one Go
// package. The module pins mpgen with a `tool` directive in go.mod.
//
// As a plugin, it reads the CodeGeneratorRequest on its standard input
// and writes into the current folder (or -out):
//
//	capnp compile -o "$(go tool -n mpgen)":OUTDIR -I ... file.capnp
//	capnp compile -o- -I ... file.capnp | go tool mpgen -pkg foo -out OUTDIR
//
// (capnp passes a plugin no arguments: use the second form for flags.)
//
// Flags:
//
//	-pkg NAME         Go package name of the generated files (default: the
//	                  output folder's base name, cleaned to an identifier)
//	-I DIR            import path for capnp (repeatable)
//	-M FILE=IMPORT    the Go package of an imported schema file that is not
//	                  generated in this run; FILE as written in the import
//	                  statement ("/mp/proxy.capnp") or as capnp names it
//	                  ("mp/proxy.capnp") (repeatable)
//	-out DIR          write the files into DIR
//
// An imported file that provides only annotations needs no -M; one whose
// types are used does, unless it is generated in the same run.
//
// # What it does not do
//
// mpgen leaves connections, bootstrap and lifetimes to the runtime and
// the packages above it, and writes no schema registry (capnpc-go's
// RegisterSchema). Its error messages name the schema file and node of
// anything it cannot generate.
package main
