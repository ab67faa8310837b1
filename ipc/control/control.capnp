# The framework's control channel. Every process of a program built on
# package ipc answers it on the same bootstrap capability as its
# application's Init, told apart by this interface's type ID: any Cap'n
# Proto peer bootstraps the application's Init as usual, and a peer that
# does not answer Control (its calls come back "unimplemented") simply has
# no control channel: no handshake, no lifetime events, and it is stopped
# by closing the connection.
#
# The IDs are pinned. Methods are only ever appended: a method a peer
# lacks means that feature is absent.
@0x90411576dcd0461c;

using import "lifetime.capnp".LifetimeListener;
using import "lifetime.capnp".LifetimeSubscription;

const controlVersion :UInt32 = 1;
# The version of this control protocol, sent in PeerInfo.controlVersion.

struct PeerInfo {
  # What one side of a connection tells the other about itself.

  controlVersion @0 :UInt32;
  # The version of the control protocol the sender speaks.

  application @1 :Text;
  # The application's name, as it chooses ("multiprocess-demo").

  applicationVersion @2 :UInt32;
  # The version of the application's own contract (its Init and what it
  # reaches). Processes of one application with different versions refuse
  # each other, with an error naming both.

  build @3 :Text;
  # The executable's build: module version and VCS revision.

  executable @4 :Text;
  # The executable's name, or its role when one binary plays several.

  pid @5 :Int32;
  # The process ID, for logs.
}

interface Control {
  hello @0 (caller :PeerInfo) -> (callee :PeerInfo);
  # hello exchanges PeerInfo. The callee refuses a caller of the same
  # application with another applicationVersion, with an error naming
  # both.

  stop @1 () -> ();
  # stop asks the process to shut down: it stops its subsystems in the
  # reverse order of start-up, streaming a shutdown event for each to its
  # subscribers, then closes its connections and exits. It returns as soon
  # as the shutdown has begun.

  subscribeLifetime @2 (listener :LifetimeListener) -> (subscription :LifetimeSubscription);
  # subscribeLifetime streams this process's lifetime events to listener:
  # first every event recorded before the call, in order, then each new
  # one as it happens. A listener that falls too far behind is dropped.
  # Releasing the subscription ends it.
}
