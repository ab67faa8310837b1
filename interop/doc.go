// Package interop holds only tests: they check that package protocol
// speaks Cap'n Proto RPC as the C++ reference implementation does
// (libcapnp-rpc 0.9.2, Debian package libcapnp-dev). The first test that
// needs it compiles the C++ peer in cpp/ with capnp and g++ into a
// temporary folder; the tests run it as a child process, as client and as
// server, over an inherited socketpair and over a unix socket, against
// protocol.Connect and protocol.Serve: calls, pipelining, capabilities
// both ways, callbacks, exceptions, cancellation, release, embargo
// ordering, streaming and disconnects. Where a Go peer must die mid-call,
// the test binary re-executes itself as that peer. The interfaces both
// sides serve are in internal/ischema.
//
// The tests go through protocol's public API only, so that they keep
// holding when protocol changes the RPC implementation underneath. Cases
// that go-capnp's rpc package is known to fail are skipped, with the
// reason, while protocol is built on it (MP_INTEROP_KNOWN_BUGS=1 runs
// them). Without capnp, g++ or pkg-config's capnp-rpc the tests are
// skipped, unless CI=true: then they fail.
package interop
