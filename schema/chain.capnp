# Chain: the node's toy block chain, as the node serves it to its wallet
# and to -ipcbind clients, and the callback through which a subscriber
# learns of each block.
@0xb31d84b39669dc06;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

struct Payout {
  # One output of a block: amount, in the smallest unit, paid to address.
  address @0 :Text;
  amount @1 :Int64;
}

struct Block {
  height @0 :UInt64;        # 0 for the genesis block
  hash @1 :Data;            # SHA-256 over parentHash, height, time and payouts
  parentHash @2 :Data;      # all zeros for the genesis block
  timeUnixNano @3 :Int64;
  payouts @4 :List(Payout);
}

interface Chain {
  height @0 () -> (height :UInt64);
  # height returns the height of the chain's tip.

  blockHash @1 (height :UInt64) -> (hash :Data);
  # blockHash returns the hash of the block at height, or an error when
  # the chain is not that high.

  block @2 (hash :Data) -> (block :Block);
  # block returns the block with the given hash, or an error when there
  # is none.

  handleNotifications @3 (listener :ChainNotifications, fromHeight :UInt64) -> (handle :NotificationHandle);
  # handleNotifications calls listener.blockConnected for every block
  # from fromHeight on, in order, one at a time: each call is made only
  # after the previous one has returned, so a returned call is a block the
  # listener has dealt with. It catches up on blocks already in the chain,
  # then follows the tip. Releasing the handle, or calling disconnect,
  # ends the subscription; so does a failed blockConnected call.
}

interface ChainNotifications {
  blockConnected @0 (block :Block) -> ();
  # blockConnected tells the listener that block is now part of the chain.
  # The listener returns once it has committed what the block means to it.
}

interface NotificationHandle {
  disconnect @0 () -> ();
  # disconnect ends the subscription and returns once no blockConnected
  # call is running for it any more.
}
