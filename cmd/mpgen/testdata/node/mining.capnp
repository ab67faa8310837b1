# A mining interface in the style of Bitcoin Core's mining.capnp: a
# Proxy.Context first parameter, defaults that refer to consts, a result
# next to a hasResult flag.
@0xe3dc68a166b6c020;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("node::capnp::messages");

using Common = import "common.capnp";
using Proxy = import "/mp/proxy.capnp";
$Proxy.include("node/mining.h");

const maxMoney :Int64 = 2100000000000000;
const maxDouble :Float64 = 1.7976931348623157e308;
const defaultWeight :UInt64 = 8000;

interface Mining $Proxy.wrap("node::Mining") {
  isTestChain @0 (context :Proxy.Context) -> (result :Bool);
  isInitialBlockDownload @1 (context :Proxy.Context) -> (result :Bool);
  getTip @2 (context :Proxy.Context) -> (result :Common.BlockRef, hasResult :Bool);
  waitTipChanged @3 (context :Proxy.Context, currentTip :Data, timeout :Float64 = .maxDouble) -> (result :Common.BlockRef);
  createNewBlock @4 (options :BlockCreateOptions) -> (result :BlockTemplate);
  checkBlock @5 (block :Data, options :BlockCheckOptions) -> (reason :Text, debug :Text, result :Bool);
  settings @6 (context :Proxy.Context) -> (result :Common.Expected(Common.Settings, Text));
}

interface BlockTemplate $Proxy.wrap("node::BlockTemplate") {
  destroy @0 (context :Proxy.Context) -> ();
  getBlockHeader @1 (context :Proxy.Context) -> (result :Data);
  getTxFees @2 (context :Proxy.Context) -> (result :List(Int64));
  waitNext @3 (context :Proxy.Context, options :BlockWaitOptions) -> (result :BlockTemplate);
}

struct BlockCreateOptions $Proxy.wrap("node::BlockCreateOptions") {
  useMempool @0 :Bool = true $Proxy.name("use_mempool");
  blockReservedWeight @1 :UInt64 = .defaultWeight;
  coinbaseOutputMaxAdditionalSigops @2 :UInt64 = 400;
}

struct BlockWaitOptions $Proxy.wrap("node::BlockWaitOptions") {
  timeout @0 :Float64 = .maxDouble;
  feeThreshold @1 :Int64 = .maxMoney;
}

struct BlockCheckOptions $Proxy.wrap("node::BlockCheckOptions") {
  checkMerkleRoot @0 :Bool = true;
  checkPow @1 :Bool = true;
}
