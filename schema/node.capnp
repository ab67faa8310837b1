# Node: the node's control interface, for -ipcbind clients such as the
# wallet command-line tool.
@0xc45d705d56d704fe;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

using import "wallet.capnp".WalletLoader;

interface Node {
  blockCount @0 () -> (count :UInt64);
  # blockCount returns the height of the chain's tip.

  generateBlocks @1 (count :UInt32, address :Text) -> (hashes :List(Data));
  # generateBlocks appends count blocks, each paying the block reward to
  # address (to the node's -payto address when empty), and returns their
  # hashes. count is at most 1000.

  walletLoader @2 () -> (loader :WalletLoader);
  # walletLoader returns the loader of the node's wallet process: a
  # capability that lives in that process, forwarded by the node. An error
  # when the node runs without a wallet.

  stop @3 () -> ();
  # stop asks the node to shut down, as SIGTERM does.
}
