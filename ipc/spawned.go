package ipc

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// StartSpawnedProcess is called first thing in main with os.Args. When the
// arguments do not say that the process was spawned (no -ipcfd), it returns
// handled=false and main carries on as a program run by hand. Otherwise it
// serves this executable's Init on the inherited socket until the parent
// closes it, and returns handled=true with the exit status for main to
// exit with: 0 after the parent went away, 1 when the arguments are wrong
// (`-ipcfd abc`, an extra argument, a descriptor that is not a socket),
// with the reason logged.
//
// A spawned process ignores SIGINT, which a terminal's Ctrl-C sends to the
// whole process group: its parent decides when it stops. It ignores
// SIGPIPE too: a vanished peer is an error on the socket, not a signal.
func (i *Ipc) StartSpawnedProcess(args []string) (handled bool, status int) {
	fd, spawned, err := process.CheckSpawned(args)
	if err != nil {
		i.ctx.Logger.Error("invalid arguments for a spawned process", "err", err)
		return true, 1
	}
	if !spawned {
		return false, 0
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGPIPE)
	i.ctx.Logger.Info("spawned on an IPC socket; ignoring SIGINT, the parent decides when to stop", "fd", fd)
	nc, err := process.SocketConn(fd)
	if err != nil {
		i.ctx.Logger.Error("cannot serve on the inherited descriptor", "fd", fd, "err", err)
		return true, 1
	}
	err = protocol.Serve(context.Background(), nc, i.serveInit, i.protocolOptions())
	_ = i.Close()
	if err != nil {
		i.ctx.Logger.Error("serving the parent failed", "err", err)
		return true, 1
	}
	i.ctx.Logger.Info("parent closed the connection; exiting")
	return true, 0
}
