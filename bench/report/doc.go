// Command report runs package bench's cross-process benchmarks several
// times, interleaved, and prints a markdown report: medians, ratios to
// the raw socketpair baseline of the same run, resource figures, and the
// performance targets marked met or not. The generated path (mpgen's
// plain-Go interfaces through package ipc) is what the targets apply to;
// the capnpc-go path's figures and bench/floor's (go-capnp's API with no
// connection behind it) are shown beside it.
//
// From the module root:
//
//	go run ./bench/report                 # 7 rounds, about 6 minutes
//	go run ./bench/report -count 3 -o raw.txt
//	go run ./bench/report -from raw.txt   # re-render saved output
//
// It builds the test binaries of bench and bench/floor once (go test -c)
// and runs them from their package directories, as go test does. Each
// round runs four passes: the timed benchmarks at -benchtime (default
// 1s), BenchmarkEcho1MiB at a fixed 1000 calls and BenchmarkStream64B at
// a fixed 100000 messages, the counts for which the resource targets are
// stated, and bench/floor's benchmarks at -floortime. go test's own
// -count would repeat each benchmark back to back; rounds make the
// baselines and ours alternate in time, so that a change in the
// machine's load touches all of them alike.
package main
