# Interfaces for the tests of packages mp and protocol: the runtime's mechanisms (calls,
# callbacks, pipelining, streams, ordering, errors) on small interfaces.
@0xd4c9e3a5b8f17a02;

interface Echo {
  echo @0 (echo :Text) -> (result :Text);
  # echo returns its argument unchanged.
}

interface Callback {
  call @0 (depth :UInt32, back :Callback) -> (depth :UInt32);
  # call returns depth once it reaches zero; above zero it calls
  # back.call(depth - 1, self) and returns what that returns.
}

interface Maker {
  makeEcho @0 () -> (echo :Echo);
  # makeEcho returns a new Echo.

  callback @1 () -> (callback :Callback);
  # callback returns the maker's Callback.

  sink @2 () -> (sink :Sink);
  # sink returns a new Sink.

  identity @3 (cap :Echo) -> (cap :Echo);
  # identity returns its argument.

  fail @4 (code :Text) -> ();
  # fail returns the declared error with the given code.

  count @5 (items :List(Item)) -> (n :UInt32, sum :UInt64);
  # count returns how many items it was given, and the sum of their
  # values.
}

struct Item {
  value @0 :UInt64;
  label @1 :Text;
}

interface Sink {
  push @0 (n :UInt32) -> stream;
  # push records n.

  total @1 () -> (total :UInt64, count :UInt32);
  # total returns the sum and the number of the values pushed.
}

interface Blob {
  # Large payloads: what the runtime sends without copying (lent
  # segments) and what it copies.

  echoData @0 (data :Data) -> (data :Data);
  # echoData returns its argument: the result lies within the
  # parameters.

  echoText @1 (text :Text) -> (text :Text);
  # echoText returns its argument.

  copyData @2 (data :Data) -> (data :Data);
  # copyData returns a copy of its argument that it owns.

  pushData @3 (data :Data) -> stream;
  # pushData records the size and a checksum of data.

  sum @4 () -> (count :UInt64, bytes :UInt64, digest :UInt64);
  # sum returns what pushData recorded.
}
