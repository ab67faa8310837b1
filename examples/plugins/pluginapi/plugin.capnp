# The interface of the plugins example: a host spawns plugin processes,
# each serving this Init, and calls their Plugin.
@0xecdec0572a50ff2a;

interface Init {
  plugin @0 () -> (plugin :Plugin);
  # plugin returns the process's plugin.
}

interface Plugin {
  name @0 () -> (name :Text);
  # name returns the plugin's name.

  transform @1 (input :Text) -> (output :Text);
  # transform returns input transformed as the plugin does.
}
