# Interfaces that extend those of base.capnp (another Go package) and one
# another: several levels, several parents, a diamond, generic ancestors;
# capabilities in parameters and results, pipelining, streams, named
# parameter and result structs.
@0xe994865f2724fa19;

using Base = import "base.capnp";

interface Registry extends(Base.Counter) {
  lookup @0 (name :Text) -> (counter :Base.Counter);
  stats @1 () -> (stats :Base.Stats);
  open @2 (name :Text) -> (counter :Base.Counter, named :Base.Named, created :Bool);
  watch @3 (sink :EventSink) -> ();
  texts @4 () -> (source :Base.Source(Text));
  made @5 () -> Made;
}

struct Made {
  named @0 :Base.Named;
  counter @1 :Base.Counter;
  id @2 :UInt32;
}

interface EventSink {
  event @0 (kind :Text, at :UInt64) -> stream;
  done @1 () -> (count :UInt32);
}

interface NamedSink extends(Base.Named, EventSink) {}

interface Diamond extends(Base.Counter, Base.Named) {
  describe @0 () -> (text :Text);
  tag @1 (base :Text, mp :Text, capnp :UInt8) -> ();
  # tag's parameters are named as the packages the generated code uses.
}

interface TextSource extends(Base.Source(Text)) {
  rewind @0 () -> ();
}

interface Buffered(T) extends(Base.Source(T)) {
  fill @0 (value :T) -> ();
}

struct Options {
  verbose @0 :Bool = true;
  limit @1 :UInt32 = 10;
  tags @2 :List(Text) = ["a"];
}

interface Configurable {
  configure @0 Options -> Options;
  capability @1 (cap :Capability) -> (cap :Capability);
  convert @2 [U] (value :U) -> (value :U);
  sources @3 (of :Buffered(Data)) -> (source :Buffered(Data), text :Base.Source(Text));
}
