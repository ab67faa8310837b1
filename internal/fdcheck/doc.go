// Package fdcheck finds the file descriptors a test leaves open. It
// compares /proc/self/fd before a test and after its cleanups, waiting a
// while for descriptors that other goroutines close asynchronously (a
// connection's socket, a reaped child's pipes), and names those left
// over. It reads /proc, so it works on Linux only; it leaves to the
// tests how long to wait, and knows nothing of what opened a descriptor.
package fdcheck
