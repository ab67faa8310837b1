# Echo: the smallest useful interface, for checking that calls cross the
# process boundary and for measuring what a call costs.
@0xc15bc3d93fdf6ca9;

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/gomultiprocess/multiprocess/schema");

interface Echo {
  # echo returns its argument unchanged.
  echo @0 (echo :Text) -> (result :Text);
}
