# Init: the bootstrap interface every executable serves on its IPC socket.
# The controlling process calls its methods to get further capabilities.
# Clients in other languages find it by this file's ID and the type IDs
# below; methods are only ever appended, never renumbered.
@0xcaa0a91c028b018b;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

using import "echo.capnp".Echo;
using import "/ipc/control/lifetime.capnp".LifetimeListener;
using import "/ipc/control/lifetime.capnp".LifetimeSubscription;
using import "chain.capnp".Chain;
using import "node.capnp".Node;
using import "wallet.capnp".WalletLoader;
using import "wallet.capnp".WalletSettings;

struct PeerInfo {
  # What one side of a connection tells the other about itself, so that
  # two executables that do not belong together fail early and clearly.
  # Deprecated with Init.hello: the framework's control channel
  # (/ipc/control/control.capnp) carries its own PeerInfo.

  protocolVersion @0 :UInt32;
  # The version of this schema's contract. Peers with different versions
  # refuse each other.

  build @1 :Text;
  # The build of the executable: module version and VCS revision.

  executable @2 :Text;
  # The executable's name, e.g. "node" or "wallet".

  pid @3 :Int32;
  # The process ID, for logs.
}

interface Init {
  makeEcho @0 () -> (result :Echo);
  # makeEcho returns a new Echo served by this process.

  hello @1 (caller :PeerInfo) -> (callee :PeerInfo);
  # Deprecated: the framework's Control.hello, which every process answers
  # on the same capability, replaces it. hello exchanges PeerInfo; the
  # callee refuses a caller whose protocol version differs from its own
  # with an error naming both.

  subscribeLifetime @2 (listener :LifetimeListener) -> (subscription :LifetimeSubscription);
  # Deprecated: Control.subscribeLifetime replaces it, and does the same.
  # subscribeLifetime streams this process's lifetime events to listener:
  # first every event recorded before the call, in order, then each new
  # one as it happens. A listener that falls too far behind is dropped.

  stop @3 () -> ();
  # Deprecated: Control.stop replaces it, and does the same. stop asks the
  # process to shut down: it stops its subsystems in the reverse order of
  # start-up, streaming a shutdown event for each to its subscribers, then
  # closes its connections and exits. It returns as soon as the shutdown
  # has begun.

  makeNode @4 () -> (node :Node);
  # makeNode returns the node's control interface. Served by the node.

  makeChain @5 () -> (chain :Chain);
  # makeChain returns the node's chain. Served by the node.

  makeWalletLoader @6 (settings :WalletSettings, chain :Chain) -> (loader :WalletLoader);
  # makeWalletLoader starts the wallet process's wallets with settings
  # and returns their loader; the wallets follow chain, which the caller
  # serves, and call back into it. Served by the wallet, once per process.
  #
  # A process answers the methods it does not serve with an exception of
  # type unimplemented.
}
