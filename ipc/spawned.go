package ipc

import (
	"context"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// flushTimeout bounds how long a stopping process waits for its
// subscribers to receive its last events before it closes their
// connections.
const flushTimeout = 5 * time.Second

// StartSpawnedProcess is called first thing in main with os.Args (after
// RunRole, in a binary that plays several roles). When the arguments do
// not say that the process was spawned (no -ipcfd), it returns
// handled=false and main carries on as a program run by hand. Otherwise it
// serves this executable's Init on the inherited socket and returns
// handled=true with the exit status for main to exit with: 0 after a
// shutdown (or the status given to Context.StopWithStatus), 1 when the
// arguments are wrong (`-ipcfd abc`, an extra
// argument, a descriptor that is not a socket), with the reason logged.
//
// The process shuts down when its parent asks (Control.stop, or the
// parent releasing its Init) or when the socket closes without a stop
// request (the parent died, however it died): either way its subsystems
// stop in reverse order of start-up (Context.Lifetime), with a shutdown
// event for each that reaches the subscribers still connected, the parent
// among them, and then the socket is closed.
//
// While its parent lives, a spawned process ignores SIGINT, SIGTERM and
// SIGHUP, which reach a whole process group (a terminal's Ctrl-C, a
// closed terminal, `kill -- -PGID`, systemd's stop): its parent decides
// when it stops, and stops it cleanly. Once the parent is gone, the
// signals act again. It ignores SIGPIPE throughout: a vanished peer is an
// error on the socket, not a signal.
func (i *Ipc[I]) StartSpawnedProcess(args []string) (handled bool, status int) {
	return i.core.startSpawned(args)
}

// parentSignals are the signals a spawned process leaves to its parent.
var parentSignals = []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

func (c *core) startSpawned(args []string) (handled bool, status int) {
	fd, spawned, err := process.CheckSpawned(args)
	if err != nil {
		c.ctx.Logger.Error("invalid arguments for a spawned process", "err", err)
		return true, 1
	}
	if !spawned {
		return false, 0
	}
	for _, s := range parentSignals {
		signal.Ignore(s)
	}
	signal.Ignore(syscall.SIGPIPE)
	c.ctx.Logger.Debug("spawned on an IPC socket; SIGINT, SIGTERM and SIGHUP are left to the parent", "fd", fd)
	nc, err := process.SocketConn(fd)
	if err != nil {
		c.ctx.Logger.Error("cannot serve on the inherited descriptor", "fd", fd, "err", err)
		return true, 1
	}

	lt := c.ctx.Lifetime
	var (
		connOnce sync.Once
		conn     *protocol.Conn
		connSet  = make(chan struct{})
	)
	served := make(chan error, 1)
	// The parent's calls are served once start-up is complete: the
	// subsystems that its first calls start (pipelined with the
	// handshake) come after startupComplete in the history, as they
	// would on any later call.
	begin := make(chan struct{})
	// The connection to the parent is closed only after the last event
	// (shutdownComplete) has been recorded and flushed to subscribers,
	// the parent among them: its stage stops nothing itself.
	_ = lt.Start(SubsystemIPCParent, func() (func(), error) {
		go func() {
			<-begin
			served <- protocol.Serve(context.Background(), nc, func(pc *protocol.Conn) capnp.Client {
				connOnce.Do(func() { conn = pc; close(connSet) })
				return c.serve(pc)
			}, c.childConnOptions())
		}()
		return nil, nil
	})
	lt.StartupComplete()
	close(begin)

	var serveErr error
	select {
	case <-c.ctx.StopRequested():
		// Context.Stop logged the request.
		c.ctx.Logger.Debug("parent asked this process to stop; shutting down")
	case serveErr = <-served:
		served <- serveErr
		// The parent is gone: nobody else will stop this process, so
		// the signals act again.
		for _, s := range parentSignals {
			signal.Reset(s)
		}
		c.ctx.Logger.Info("parent closed the connection; shutting down")
	}
	lt.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	if err := lt.Flush(ctx); err != nil {
		c.ctx.Logger.Warn("subscribers did not take the last events in time", "err", err)
	}
	cancel()
	<-connSet
	_ = conn.Close()
	serveErr = <-served
	_ = c.close()
	if serveErr != nil {
		c.ctx.Logger.Error("serving the parent failed", "err", serveErr)
		return true, 1
	}
	status = int(c.ctx.status.Load())
	c.ctx.Logger.Info("shut down; exiting", "status", status)
	return true, status
}
