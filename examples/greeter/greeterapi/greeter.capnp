@0x97a3acabe3b4b5d0;

interface Init {
  greeter @0 () -> (greeter :Greeter);
}

interface Greeter {
  greet @0 (name :Text) -> (greeting :Text);
}
