# Every type that mpgen maps, for its golden, round-trip, capnpc-go and
# C++ tests. mpgen ignores the Go annotations; capnpc-go needs them.
@0xcd87536224cf2538;

using Go = import "/go.capnp";
$Go.package("typescg");
$Go.import("github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/types/typescg");

const maxMoney :Int64 = 2100000000000000;
# maxMoney is the most money there is.

const maxDouble :Float64 = 1.7976931348623157e308;
const greeting :Text = "hello, \"world\"\n";
const magic :Data = 0x"cafe f00d";
const primes :List(UInt32) = [2, 3, 5, 7];
const yes :Bool = true;
const third :Float32 = 0.333;
const names :List(Text) = ["ann", "bob"];

enum Color {
  red @0;
  green @1;
  # green is the default colour of Scalars.
  blue @2;
}

struct Point {
  x @0 :Int32;
  y @1 :Int32;
}

struct Scalars {
  # Every scalar width, each with a default that is not zero, and one of
  # each kind without.

  bool @0 :Bool = true;
  int8 @1 :Int8 = -8;
  int16 @2 :Int16 = -1616;
  int32 @3 :Int32 = -323232;
  int64 @4 :Int64 = -6464646464646464;
  uint8 @5 :UInt8 = 208;
  uint16 @6 :UInt16 = 61616;
  uint32 @7 :UInt32 = 3232323232;
  uint64 @8 :UInt64 = 16464646464646464646;
  float32 @9 :Float32 = 3.25;
  float64 @10 :Float64 = -6.125e100;
  color @11 :Color = green;
  text @12 :Text = "default text";
  data @13 :Data = 0x"0102 0304";
  timeout @14 :Float64 = .maxDouble;
  # timeout defaults to a const, as Bitcoin Core's mining.capnp does.
  infinity @15 :Float32 = inf;
  notANumber @16 :Float64 = nan;

  plainBool @17 :Bool;
  plainInt32 @18 :Int32;
  plainFloat64 @19 :Float64;
  plainText @20 :Text;
  plainData @21 :Data;
  plainColor @22 :Color;
  nothing @23 :Void;
  useMempool @24 :Bool = true;
}

struct Lists {
  voids @0 :List(Void);
  bools @1 :List(Bool);
  int8s @2 :List(Int8);
  int16s @3 :List(Int16);
  int32s @4 :List(Int32);
  int64s @5 :List(Int64);
  uint8s @6 :List(UInt8);
  uint16s @7 :List(UInt16);
  uint32s @8 :List(UInt32);
  uint64s @9 :List(UInt64);
  float32s @10 :List(Float32);
  float64s @11 :List(Float64);
  texts @12 :List(Text);
  datas @13 :List(Data);
  colors @14 :List(Color);
  points @15 :List(Point);
  int32Lists @16 :List(List(Int32));
  textLists @17 :List(List(Text));
  pointLists @18 :List(List(Point));
  echoes @19 :List(Echo);
  shapes @20 :List(Shape);

  uint32sDefault @21 :List(UInt32) = [1, 2, 3];
  textsDefault @22 :List(Text) = ["a", "bc"];
  pointsDefault @23 :List(Point) = [(x = 1, y = 2), (x = 3, y = 4)];
  boolsDefault @24 :List(Bool) = [true, false, true];
  nestedDefault @25 :List(List(Int32)) = [[1], [], [2, 3]];
  colorsDefault @26 :List(Color) = [blue, red];
}

struct Shape {
  name @0 :Text;
  union {
    circle @1 :Float64 = 1.5;
    square :group {
      side @2 :Float64;
      color @3 :Color = blue;
    }
    empty @4 :Void;
    label @5 :Text = "unnamed";
    point @6 :Point;
  }
  extra :union {
    none @7 :Void;
    count @8 :UInt32 = 7;
    tags @9 :List(Text);
    nested :group {
      depth @10 :UInt16 = 3;
      inner :union {
        small @11 :Int8;
        word @12 :Text;
      }
    }
  }
}

struct Pair(Key, Value) {
  key @0 :Key;
  value @1 :Value;
}

struct Result(Value) {
  value @0 :Value;
  error @1 :Text;
}

struct Expected(Value, Error) {
  union {
    value @0 :Value;
    error @1 :Error;
  }
}

struct Outer(T) {
  struct Inner {
    value @0 :T;
    pairs @1 :List(Pair(Text, T));
  }
  inner @0 :Inner;
  direct @1 :T;
}

struct Generics {
  settings @0 :List(Pair(Text, Text));
  config @1 :List(Pair(Text, List(Pair(Text, List(Text)))));
  result @2 :Result(Point);
  expected @3 :Expected(Text, Data);
  unbound @4 :Pair;
  outer @5 :Outer(List(UInt32));
  echoPair @6 :Pair(Text, Echo);
  pairDefault @7 :Pair(Text, Text) = (key = "k", value = "v");
}

struct Anys {
  any @0 :AnyPointer;
  anyStruct @1 :AnyStruct;
  anyList @2 :AnyList;
  cap @3 :Capability;
}

struct Defaults {
  point @0 :Point = (x = 3, y = -4);
  shape @1 :Shape = (name = "sq", square = (side = 2.5));
  scalars @2 :Scalars;
  lists @3 :Lists = (int32s = [5, 6], texts = ["x"]);
  text @4 :Text = "x";
}

struct Root {
  scalars @0 :Scalars;
  lists @1 :Lists;
  shapes @2 :List(Shape);
  generics @3 :Generics;
  anys @4 :Anys;
  defaults @5 :Defaults;
}

# Consts of struct and enum types come after the types: capnp's C++ code
# declares consts first.
const origin :Point = (x = -1, y = 1);
const favourite :Color = blue;

interface Echo {
  echo @0 (text :Text) -> (text :Text);
}
