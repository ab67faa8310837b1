# The node's Init in the style of Bitcoin Core's init.capnp: construct
# with a ThreadMap, then make the interfaces.
@0xbcb53679f288d4d7;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("node::capnp::messages");

using Proxy = import "/mp/proxy.capnp";
using Echo = import "echo.capnp";
using Mining = import "mining.capnp";
$Proxy.include("node/init.h");

interface Init $Proxy.wrap("node::Init") {
  construct @0 (threadMap :Proxy.ThreadMap) -> (threadMap :Proxy.ThreadMap);
  makeEcho @1 (context :Proxy.Context) -> (result :Echo.Echo);
  makeMining @2 (context :Proxy.Context) -> (result :Mining.Mining);
}
