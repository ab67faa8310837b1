// Package bench measures what a call across the process boundary costs,
// next to the baselines it should be compared with. It holds no library
// code: everything is in its benchmarks and tests.
//
// Every figure comes from two real processes: the test binary re-executes
// itself as the child (TestMain serves as the child when the environment
// says so), and the parent talks to it over a socketpair. The baselines,
// measured in the same run, are a raw length-prefixed echo with one write
// per message, and net/rpc. Two paths of this module are measured beside
// them:
//
//   - the generated path, which the performance targets apply to: the
//     plain Go interfaces that mpgen generates from internal/mpbench's
//     schema, served by the child through ipc.StartSpawnedProcess and
//     called through the Init that ipc.Spawn returns, as a program uses
//     them;
//   - the capnpc-go path: go-capnp's generated API (internal/capnpschema's
//     Init and Echo, internal/benchschema's Bench and Sink) on the same
//     connection, served with protocol.NewServer and protocol.Serve in the
//     child and called through protocol.Connect, as the suite measured it
//     before package ipc became generic.
//
// The peers a Go user would pick instead (gRPC as hashicorp/go-plugin runs
// it, go-capnp's own rpc package) are measured the same way by bench/peers,
// a module of its own so that their dependencies stay out of this one's.
//
// `go run ./bench/report` runs the suite and the peers several times,
// interleaved, and prints the medians as ratios to the raw baseline and to
// each peer, with the targets marked met or not and bench/floor's figures
// beside the capnpc-go path's; README.md explains each benchmark and
// PROFILE.md where the time of a small call goes.
//
// Tests in this package check that the benchmarks measure what they say
// (payloads come back intact, every streamed message arrives, children
// exit cleanly); none of them asserts a speed.
package bench
