# Echo: the smallest useful interface, for checking that calls cross the
# process boundary and for measuring what a call costs.
@0xc15bc3d93fdf6ca9;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

interface Echo {
  # echo returns its argument unchanged.
  echo @0 (echo :Text) -> (result :Text);

  echoAfter @1 (echo :Text, delayMs :UInt32) -> (result :Text);
  # echoAfter returns its argument unchanged after delayMs milliseconds,
  # for checking that one slow call does not hold up others. The callee
  # refuses a delay over a minute, and returns early with an error when
  # the caller cancels the call or the connection ends.
}
