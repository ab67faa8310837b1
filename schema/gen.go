package schema

// The module's root is an import directory: init.capnp imports the
// framework's lifetime schema as /ipc/control/lifetime.capnp.
//go:generate go tool mpgen -I .. -M /ipc/control/lifetime.capnp=github.com/gomultiprocess/multiprocess/ipc/control chain.capnp echo.capnp init.capnp node.capnp wallet.capnp
