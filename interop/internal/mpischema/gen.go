// Package mpischema is the Go that mpgen generates from package ischema's
// interop.capnp: the same interfaces as plain Go interfaces, proxies and
// server tables on package mp, for package interop's tests on the
// generated path. The schemas interop.capnp imports map to the packages
// generated from them: /schema/echo.capnp to schema, and
// /ipc/control/lifetime.capnp to ipc/control.
package mpischema

//go:generate go tool mpgen -I ../../.. -M /schema/echo.capnp=github.com/gomultiprocess/multiprocess/schema -M /ipc/control/lifetime.capnp=github.com/gomultiprocess/multiprocess/ipc/control -out . ../ischema/interop.capnp
