# The interfaces of package bench's generated path: what the benchmark
# child serves as its Init through package ipc, compiled by mpgen into
# plain Go interfaces. The capnpc-go path has its own schema
# (../benchschema, with the reference program's Init and Echo).
@0xd04c1d50d62b03e0;

interface Init {
  makeEcho @0 () -> (echo :Echo);
  # makeEcho returns a new Echo served by the child.

  makeSink @1 () -> (sink :Sink);
  # makeSink returns a new Sink served by the child.

  stats @2 () -> (stats :Stats);
  # stats reports the child's resource use at the time of the call.
}

interface Echo {
  echo @0 (text :Text) -> (text :Text);
  # echo returns its argument: a Go string each way, as plain Go code
  # passes text.

  echoData @1 (data :Data) -> (data :Data);
  # echoData returns its argument: bytes that the server reads in place
  # (parameters are borrowed for the call) and copies once, into the
  # results.
}

interface Sink {
  # A one-way stream of payloads, one message per streamed call.

  push @0 (data :Data) -> stream;
  # push counts data and drops it.

  done @1 () -> (count :UInt64, bytes :UInt64);
  # done returns how many pushes (and payload bytes) arrived so far.
}

struct Stats {
  pid @0 :Int32;

  goroutines @1 :UInt32;
  # runtime.NumGoroutine() when stats ran.

  peakGoroutines @2 :UInt32;
  # The most goroutines seen: sampled every 5 ms, and by each push.

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
