# Lifetime events: what a process is starting and stopping, streamed to
# whoever subscribes (its parent, a monitoring client on -ipcbind), after
# dcrd's lifetimeevent messages on its event pipe.
@0x9a15f0815d512e40;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

enum Subsystem {
  # The parts of the reference program's executables that start and stop
  # in order, for peers that predate LifetimeEvent.subsystemName; values
  # are only ever appended. Other programs name their subsystems in
  # subsystemName and leave this at "process".
  process @0;            # the process as a whole
  ipcListener @1;        # accepting -ipcbind connections
  walletProcess @2;      # the node's wallet child
  database @3;           # the node's chain database
  walletDatabase @4;     # the wallet's database
  chainNotifications @5; # the wallet's subscription to the node's chain
  ipcParent @6;          # a spawned process serving its parent
  blockProducer @7;      # the node producing blocks on -blockinterval
}

struct LifetimeEvent {
  enum Kind {
    startup @0;         # the subsystem is about to start
    startupComplete @1; # every subsystem has started
    shutdown @2;        # the subsystem is about to stop
    shutdownComplete @3; # every subsystem has stopped; the process ends
  }

  kind @0 :Kind;
  subsystem @1 :Subsystem;
  executable @2 :Text;  # the process's executable name, e.g. "wallet"
  pid @3 :Int32;
  timeUnixNano @4 :Int64;
  sequence @5 :UInt64;  # 1 for a process's first event, then counting up
  subsystemName @6 :Text;
  # The subsystem's name, chosen by the application ("database",
  # "walletProcess"); empty for the process as a whole.
}

interface LifetimeListener {
  event @0 (event :LifetimeEvent) -> stream;
  # event delivers one event. Streaming: the sender does not wait for each
  # call's return, and flow control bounds what is in flight.
}

interface LifetimeSubscription {
  # Releasing the subscription ends it; so does the listener's connection
  # going away.
}
