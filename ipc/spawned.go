package ipc

import (
	"context"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// flushTimeout bounds how long a stopping process waits for its
// subscribers to receive its last events before it closes their
// connections.
const flushTimeout = 5 * time.Second

// StartSpawnedProcess is called first thing in main with os.Args. When the
// arguments do not say that the process was spawned (no -ipcfd), it returns
// handled=false and main carries on as a program run by hand. Otherwise it
// serves this executable's Init on the inherited socket and returns
// handled=true with the exit status for main to exit with: 0 after a
// shutdown, 1 when the arguments are wrong (`-ipcfd abc`, an extra
// argument, a descriptor that is not a socket), with the reason logged.
//
// The process shuts down when its parent asks (Init.stop) or when the
// socket closes without a stop request (the parent died, however it
// died): either way its subsystems stop in reverse order of start-up
// (Context.Lifetime), with a shutdown event for each that reaches the
// subscribers still connected, the parent among them, and then the socket
// is closed.
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

	lt := i.ctx.Lifetime
	var (
		connOnce sync.Once
		conn     *protocol.Conn
		connSet  = make(chan struct{})
	)
	served := make(chan error, 1)
	_ = lt.Start(schema.Subsystem_ipcParent, func() (func(), error) {
		go func() {
			served <- protocol.Serve(context.Background(), nc, func(c *protocol.Conn) capnp.Client {
				connOnce.Do(func() { conn = c; close(connSet) })
				return i.serveInit(c)
			}, i.protocolOptions())
		}()
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
			defer cancel()
			if err := lt.Flush(ctx); err != nil {
				i.ctx.Logger.Warn("subscribers did not take the last events in time", "err", err)
			}
			<-connSet
			_ = conn.Close()
		}, nil
	})
	lt.StartupComplete()

	var serveErr error
	select {
	case <-i.ctx.StopRequested():
		i.ctx.Logger.Info("parent asked this process to stop; shutting down")
	case serveErr = <-served:
		served <- serveErr
		i.ctx.Logger.Info("parent closed the connection; shutting down")
	}
	lt.Shutdown()
	serveErr = <-served
	_ = i.Close()
	if serveErr != nil {
		i.ctx.Logger.Error("serving the parent failed", "err", serveErr)
		return true, 1
	}
	i.ctx.Logger.Info("shut down; exiting")
	return true, 0
}
