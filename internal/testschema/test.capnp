# Test-only interfaces for package protocol's tests: a callback that calls
# back into its caller, and a server whose calls can block.
@0xdc93b543283f31bb;

using Go = import "/go.capnp";
$Go.package("testschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/testschema");

interface Callback {
  call @0 (depth :UInt32, back :Callback) -> (depth :UInt32);
  # call returns depth once it reaches zero; above zero it calls
  # back.call(depth - 1, self) and returns what that returns.
}

interface Slow {
  sleep @0 (ms :UInt32) -> ();
  # sleep blocks until the test releases it or ms milliseconds pass.

  echo @1 (s :Text) -> (s :Text);
  # echo returns its argument unchanged.
}
