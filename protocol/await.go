package protocol

import (
	"context"

	"capnproto.org/go/capnp/v3"
)

// Await waits until f has resolved or ctx ends, and returns the context's
// cause in the second case. Handlers and goroutines that wait for another
// process use it before reading a result, so that a peer that never
// answers cannot hold them past their context: go-capnp's Future.Struct
// alone waits without one.
func Await(ctx context.Context, f *capnp.Future) error {
	select {
	case <-f.Done():
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
