# Interfaces for the wire-compatibility tests against the C++ reference
# implementation (package interop). Both the Go side and the C++ peers
# serve Peer as their bootstrap capability, so every scenario runs with
# either side as client.
@0xbfb20bcc22f68b04;

using Go = import "/go.capnp";
$Go.package("ischema");
$Go.import("github.com/gomultiprocess/multiprocess/interop/internal/ischema");

using import "/schema/echo.capnp".Echo;
using import "/ipc/control/lifetime.capnp".LifetimeListener;

enum ErrorType {
  # The exception types of rpc.capnp's Exception.Type, in the same order.
  failed @0;
  overloaded @1;
  disconnected @2;
  unimplemented @3;
}

interface Peer {
  makeEcho @0 () -> (echo :Echo);
  # makeEcho returns a new Echo served by this process.

  makeCallback @1 () -> (callback :Callback);
  # makeCallback returns a new Callback served by this process.

  fail @2 (type :ErrorType, reason :Text) -> ();
  # fail always fails, with an exception of the given type whose
  # description contains reason.

  makeCounted @3 () -> (counted :Counted);
  # makeCounted returns a new Counted; liveCount counts those not yet
  # destroyed (released by every holder).

  liveCount @4 () -> (count :UInt32);

  echoCap @5 (cap :CallOrder) -> (cap :CallOrder);
  # echoCap returns its argument: when the caller serves cap, calls that
  # it made on the pipelined result must keep their order across the
  # result's resolution to its own capability (embargoes).

  echoCapLater @6 (cap :CallOrder, delayMs :UInt32) -> (cap :CallOrder);
  # echoCapLater returns at once a promise capability that resolves to cap
  # after delayMs milliseconds.

  makeListener @7 () -> (listener :LifetimeListener);
  # makeListener returns this process's listener; received says what it
  # got: how many events, and how many had a sequence number other than
  # their position (1, 2, ...).

  received @8 () -> (count :UInt64, outOfOrder :UInt64);

  streamTo @9 (listener :LifetimeListener, count :UInt32) -> ();
  # streamTo streams count events with sequence numbers 1..count to
  # listener and returns once they are sent.
}

interface Callback {
  call @0 (depth :UInt32, back :Callback) -> (trace :Text);
  # call returns the name of the callee's side ("go" or "c++") when depth
  # is zero; above zero it calls back.call(depth - 1, self) and returns its
  # side's name, a space and what that call returned.
}

interface Counted {
  ping @0 () -> ();
}

interface CallOrder {
  getCallSequence @0 (expected :UInt32) -> (n :UInt32);
  # getCallSequence returns how many calls this object received before
  # this one; expected is what the caller expects, for the logs.
}
