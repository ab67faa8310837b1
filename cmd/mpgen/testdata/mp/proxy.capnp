# A small stand-in for libmultiprocess's mp/proxy.capnp: the annotations
# and the ThreadMap, Thread and Context types that schemas written for
# libmultiprocess (Bitcoin Core's) import as "/mp/proxy.capnp".
@0xdacedf032190010b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mp");

annotation include(file): Text;
annotation includeTypes(file): Text;
annotation wrap(interface, struct): Text;
annotation count(param, struct, interface): Int32;
annotation exception(param): Text;
annotation name(field, method): Text;
annotation skip(field): Void;

interface ThreadMap $count(0) {
  makeThread @0 (name :Text) -> (result :Thread);
  # makeThread starts a thread on the server that calls may run on.
}

interface Thread {
  getName @0 () -> (result :Text);
}

struct Context $count(0) {
  # Context is the first parameter of the methods of interfaces that run
  # on a thread the caller chose.
  thread @0 :Thread;
  callbackThread @1 :Thread;
}
