// Package peers measures, cross-process, the RPC systems that a Go user
// would pick instead of this framework, with the workloads and the
// figures of package bench, so that bench/report can put them side by
// side in the same rounds:
//
//   - gRPC over a unix socket, as hashicorp/go-plugin runs it: the child
//     listens on a socket in a temporary directory, prints go-plugin's
//     handshake line on its stdout, and serves a grpc-go server with
//     protobuf messages (internal/peerpb); the parent reads the line and
//     dials with go-plugin's options; stopping is go-plugin's Shutdown
//     call, with the child's stdin as its lifeline;
//   - go-capnp's own rpc package (capnproto.org/go/capnp/v3/rpc) on a
//     socketpair, serving and calling the capnpc-go code of package
//     bench's capnpc-go path (internal/capnpschema's Init and Echo,
//     bench/internal/benchschema's Bench and Sink) with go-capnp's server
//     package: the same generated code on go-capnp's connection instead of
//     ours.
//
// It is a module of its own (bench/peers/go.mod), so that gRPC and
// protobuf stay out of the framework's dependencies; it requires the
// framework through a replace directive to this checkout, for
// bench/internal/probe (the figures, taken by the same code as package
// bench's), package process (the socketpair spawn) and the schemas.
//
// As in package bench, the test binary is also every child: TestMain runs
// a child when the environment names one. Tests check that the payloads
// cross and come back, that every streamed message arrives and that each
// child exits 0; none of them asserts a speed.
package peers
