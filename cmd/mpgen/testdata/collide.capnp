# Names that collide in Go, and how mpgen renames them: a generated name
# gets a _ suffix; a schema name is renamed only when two schema names
# collide (or when the runtime needs the name).
@0xb5719c87d9a7f265;

struct Widget {
  which @0 :Text;
  # which collides with the Which field of the union.

  encodeCapnp @1 :UInt32;
  # encodeCapnp collides with a method the runtime needs.

  union {
    a @2 :Void;
    b @3 :UInt8;
  }

  enum Which {
    x @0;
    y @1;
  }
}

const widget :UInt8 = 1;
# widget collides with the struct Widget: both are schema names.

struct NewWidget {
  # NewWidget collides with Widget's constructor.
  n @0 :UInt8;
}

interface Gadget {
  close @0 () -> ();
  mPClient @1 () -> ();
  make @2 () -> (gadget :Gadget);
  makePipelined @3 () -> ();
  params @4 (ctx :Text, err :Text, call :UInt32, type :Text, r :Bool, string :Text, in :Data) -> (res :Text);
}

struct GadgetClient {
  # GadgetClient collides with Gadget's proxy.
  x @0 :UInt8;
}

const gadgetMethods :Text = "m";

interface Child extends(Gadget) {
  close @0 () -> ();
  make @1 (v :UInt8) -> (gadget :Gadget);
}

struct Holder(Widget, V, E) {
  # Holder's parameters collide with a type and with the names of
  # generated code's variables.
  w @0 :Widget;
  v @1 :V;
  e @2 :E;
}
