// Package bench measures what a call across the process boundary costs,
// next to the baselines it should be compared with. It holds no library
// code: everything is in its benchmarks and tests.
//
// Every figure comes from two real processes: the test binary re-executes
// itself as the child (TestMain serves as the child when the environment
// says so), and the parent talks to it over a socketpair. The baselines,
// measured in the same run, are a raw length-prefixed echo with one write
// per message, and net/rpc. Our own figures go through the public API as
// a program uses it: ipc.SpawnProcess, the typed schema.Init and
// schema.Echo proxies, and, for streaming, a test-only schema served next
// to Init's methods by the child's Init capability.
//
// `go run ./bench/report` runs the suite several times, interleaved, and
// prints the medians as ratios to the raw baseline, with the targets of
// the RPC-layer work marked met or not; README.md explains each
// benchmark and PROFILE.md where the time of a small call goes.
//
// Tests in this package check that the benchmarks measure what they say
// (payloads come back intact, every streamed message arrives, children
// exit cleanly); none of them asserts a speed.
package bench
