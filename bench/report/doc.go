// Command report runs package bench's cross-process benchmarks, and those
// of the peers module (bench/peers: gRPC over a unix socket as
// hashicorp/go-plugin runs it, go-capnp's own rpc package), several times,
// interleaved, and prints a markdown report: medians, ratios to the raw
// socketpair baseline of the same run and to each peer, resource figures,
// and the performance targets marked met or not. The generated path
// (mpgen's plain-Go interfaces through package ipc) is what the targets
// apply to; the capnpc-go path's figures and bench/floor's (go-capnp's API
// with no connection behind it) are shown beside it.
//
// From the module root:
//
//	go run ./bench/report                 # 7 rounds, about 10 minutes
//	go run ./bench/report -count 3 -o raw.txt
//	go run ./bench/report -from raw.txt   # re-render saved output
//	go run ./bench/report -nopeers        # without bench/peers
//
// It builds the test binaries of bench, bench/peers (in its own module)
// and bench/floor once (go test -c) and runs them from their package
// directories, as go test does; if bench/peers cannot be built (its
// modules cannot be downloaded), the report says why and leaves the
// peers' columns out. Each round runs seven passes: the timed benchmarks
// at -benchtime (default 1s), BenchmarkEcho1MiB at a fixed 1000 calls and
// BenchmarkStream64B at a fixed 100000 messages, the counts for which the
// resource targets are stated, each for bench and then for bench/peers,
// and bench/floor's benchmarks at -floortime. go test's own -count would
// repeat each benchmark back to back; rounds make the baselines, ours and
// the peers alternate in time, so that a change in the machine's load
// touches all of them alike.
package main
