// Package pluginapi is the interface between the plugins example's host
// and its plugin processes (plugin.capnp), with the Go that mpgen
// generates from it.
package pluginapi

//go:generate go tool mpgen plugin.capnp
