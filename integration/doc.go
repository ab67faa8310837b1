// Package integration holds the tests that build the real executables
// (cmd/node, cmd/wallet) and check them across process boundaries: spawning,
// calls, signals, crashes and bad arguments. It has no non-test code.
package integration
