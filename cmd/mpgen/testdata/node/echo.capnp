@0xdc687ce5398f76e0;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("node::capnp::messages");

using Proxy = import "/mp/proxy.capnp";
$Proxy.include("node/echo.h");

interface Echo $Proxy.wrap("node::Echo") {
  destroy @0 (context :Proxy.Context) -> ();
  echo @1 (context :Proxy.Context, echo :Text) -> (result :Text);
  # echo returns its argument.
}
