# Interfaces that derived.capnp extends from another Go package.
@0x8fe5986284427a6c;

interface Named {
  name @0 () -> (name :Text);
  # name returns the object's name.

  rename @1 (name :Text) -> ();
}

interface Counter extends(Named) {
  add @0 (delta :Int64 = 1) -> (total :Int64);
  # add adds delta (1 unless told) and returns the total.

  reset @1 () -> ();
}

struct Stats {
  calls @0 :UInt64;
  last @1 :Text;
}

interface Source(T) {
  next @0 () -> (value :T, more :Bool);
  peek @1 () -> (value :T);
}

const negInf :Float64 = -inf;
# negInf is not in types.capnp: capnp's C++ code for it does not compile.

struct Tagged(T) {
  # A generic struct with a union, a group, a nested enum and a nested
  # interface that sees its parameter.
  union {
    none @0 :Void;
    some :group {
      value @1 :T;
      note @2 :Text = "n";
    }
  }
  kind @3 :Kind = b;

  enum Kind {
    a @0;
    b @1;
  }

  interface Opener {
    open @0 () -> (value :T, tagged :Tagged(T));
  }
}
