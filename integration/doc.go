// Package integration holds the tests of the real programs (the node and
// the wallet of cmd/node and cmd/wallet) across process boundaries:
// spawning, calls, supervision, signals, crashes, hostile input and bad
// arguments. It has no non-test code.
//
// The test binary is both programs: TestMain runs the node or the wallet
// when the binary is started under that name, and the tests run it so,
// from a temporary folder where it is linked as node and wallet. The
// programs' packages are linked into the test binary, so go test's cache
// key covers all of their sources (a change to either program reruns the
// tests), and -race builds them with the race detector.
package integration
