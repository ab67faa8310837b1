# Types shared by the node's interfaces, in the style of Bitcoin Core's
# src/ipc/capnp/common.capnp: no Go annotations, generics.
@0xe965ca7d1babd5a9;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("node::capnp::messages");

using Proxy = import "/mp/proxy.capnp";
$Proxy.includeTypes("node/capnp/common-types.h");

struct BlockRef $Proxy.wrap("node::BlockRef") {
  hash @0 :Data;
  height @1 :Int32;
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

struct Settings $Proxy.wrap("node::Settings") {
  forcedSettings @0 :List(Pair(Text, Text));
  roConfig @1 :List(Pair(Text, List(Pair(Text, List(Text)))));
  networkOnly @2 :Bool $Proxy.name("network_only");
}
