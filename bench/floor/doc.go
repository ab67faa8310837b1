// Package floor measures what go-capnp's API costs a call on its own, with
// no connection behind it: the least any RPC connection pays per call when
// programs use capnpc-go's generated code, as ours does.
//
// The benchmarks in floor_test.go drive the generated client code of
// schema.Echo and benchschema.Sink against a ClientHook that does only
// what every connection must do (put the arguments in a message, which it
// reuses, and hand back a capnp.Answer settled with ready results), and
// drive the generated server code (server.Server) the way a connection
// delivers a received call (ClientSnapshot.Recv with a Returner that
// reuses its results message). No bytes cross a socket and nothing is
// encoded for one, so every allocation, nanosecond and goroutine they
// report belongs to go-capnp's Promise, Answer, Client, server package and
// capnpc-go's generated code.
//
// These figures bound the capnpc-go path of package bench from below:
// bench/report shows them beside that path's figures, and bench/PROFILE.md
// compares them with the targets the suite was first held to. The
// generated path (mpgen's interfaces) does not go through this code. Run:
//
//	go test -run '^$' -bench . -benchmem ./bench/floor/
package floor
