package ipc

import (
	"net"
	"os"

	"capnproto.org/go/capnp/v3"
)

type capnpClient = capnp.Client

func osNewFile(fd int) *os.File { return os.NewFile(uintptr(fd), "socket") }

type netConn = net.Conn

var netFileConn = net.FileConn
