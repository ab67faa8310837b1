# Test-only interfaces for package bench: a streaming sink, and a control
# interface that the benchmark child's Init capability serves beside
# Init's own methods (a capability may implement several interfaces; calls
# name theirs by ID), so that the benchmarks reach everything through a
# child spawned with ipc.SpawnProcess.
@0xd0d52fa318565b71;

using Go = import "/go.capnp";
$Go.package("benchschema");
$Go.import("github.com/gomultiprocess/multiprocess/bench/internal/benchschema");

interface Bench {
  # Served by the benchmark child's Init capability, next to Init's
  # methods. (extends(Init) would need an import from outside this
  # directory, which gen.sh's capnp invocation cannot resolve.)

  makeSink @0 () -> (sink :Sink);
  # makeSink returns a new Sink served by the child.

  stats @1 () -> (stats :Stats);
  # stats reports the child's resource use at the time of the call.
}

struct Stats {
  pid @0 :Int32;
  goroutines @1 :UInt32;
  # runtime.NumGoroutine() when stats ran.

  peakGoroutines @2 :UInt32;
  # The most goroutines any Sink.push call saw.

  mallocs @3 :UInt64;
  # runtime.MemStats.Mallocs: heap objects allocated since start.

  peakRssKiB @4 :UInt64;
  # VmHWM from /proc/self/status: the peak resident set size.

  goroutinesCreated @5 :UInt64;
  # runtime/metrics /sched/goroutines-created: goroutines started so far.

  contextSwitches @6 :UInt64;
  # getrusage: voluntary and involuntary context switches so far.

  cpuNs @7 :UInt64;
  # getrusage: user and system CPU time so far, in nanoseconds.
}

interface Sink {
  # A one-way stream of payloads, one message per streamed call.

  push @0 (data :Data) -> stream;
  # push counts data and drops it.

  done @1 () -> (count :UInt64, bytes :UInt64);
  # done returns how many pushes (and payload bytes) arrived so far.
}
