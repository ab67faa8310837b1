// Package probe holds the measurements that every cross-process benchmark
// of this repository makes on both sides of a call: what a process says
// about itself (Stats: allocations, goroutines, context switches, CPU,
// peak RSS), the sampler of its most goroutines alive at once, and Probe,
// which surrounds a benchmark's timed loop and reports the per-operation
// figures of the parent and the child through b.ReportMetric.
//
// Package bench and the peers module (bench/peers, a module of its own
// that requires this one) both use it, so that the figures of the
// framework and of the peers it is compared with are taken by the same
// code. How a child sends its Stats to the parent is each benchmark's
// business: over its own protocol, as a call like any other.
package probe
