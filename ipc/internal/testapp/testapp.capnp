# The Init of package ipc's tests: a small application of its own, so
# that the framework's tests know nothing of the reference program.
@0x91fc90783c314467;

interface Init {
  echo @0 (text :Text) -> (text :Text);
  # echo returns its argument.

  echoAfter @1 (text :Text, delayMs :UInt32) -> (text :Text);
  # echoAfter returns its argument after delayMs milliseconds, or an
  # error once the call is canceled.

  pid @2 () -> (pid :Int32);
  # pid returns the serving process's ID.

  exit @3 (code :Int32) -> ();
  # exit ends the serving process at once with status code, as a crash
  # would: no shutdown, no reply.

  getenv @4 (name :Text) -> (value :Text, found :Bool);
  # getenv returns the serving process's environment variable name, and
  # whether it is set.
}
