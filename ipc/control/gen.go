package control

//go:generate go tool mpgen -I ../.. control.capnp lifetime.capnp
