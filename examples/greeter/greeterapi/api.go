// Package greeterapi is the interface between the greeter example's two
// processes: greeter.capnp and the Go that mpgen generates from it.
package greeterapi

import "github.com/gomultiprocess/multiprocess/mp"

//go:generate go tool mpgen greeter.capnp

// ErrNoName is Greeter.greet's error for an empty name. It is declared:
// errors.Is finds it in the calling process too.
var ErrNoName = mp.NewError("greeter.noName", "no name given")
