package ipc

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Names of the environment variables through which a parent hands a
// spawned child what it needs before the first call. Everything else
// reaches the child over IPC; never through extra arguments.
const (
	// EnvDebug carries the -debug categories, comma-separated ("ipc").
	EnvDebug = "MULTIPROCESS_DEBUG"
	// EnvRole names the role a binary spawned as itself plays (RunRole);
	// the child clears it once read.
	EnvRole = "MULTIPROCESS_ROLE"
)

// DefaultShutdownTimeout is how long a stopped child is given to exit by
// itself before it is killed.
const DefaultShutdownTimeout = 10 * time.Second

// DefaultStartTimeout is how long a spawned child is given to answer its
// handshake before it is killed.
const DefaultStartTimeout = 30 * time.Second

// ErrVersionMismatch is matched by the error of a handshake between two
// processes of one application that speak different versions of its
// contract, on both sides.
var ErrVersionMismatch = mp.NewError("ipc.versionMismatch", "ipc: application version mismatch")

// ErrNoControl is matched by the error of Ipc.Handshake with a peer that
// does not answer the framework's control interface (any Cap'n Proto
// server that is not built on this package): it has no handshake, no
// lifetime events, and is stopped by closing the connection.
var ErrNoControl = errors.New("ipc: the peer has no control channel")

// InitFactory makes the Init that one connection serves. Each connection
// gets its own, so that a slow call from one peer never holds up
// another's (calls on one value run one at a time: see package mp).
type InitFactory[I any] func(ctx *Context, conn *protocol.Conn) I

// Options tunes an Ipc; a nil *Options means defaults.
type Options struct {
	// Logger receives the facade's and the connections' logs. Nil means
	// silent. It should already carry the process name and pid.
	Logger *slog.Logger

	// DebugIPC logs every call at debug level (the -debug=ipc setting).
	// Spawned children inherit it through EnvDebug.
	DebugIPC bool

	// Application names the program in the handshake ("multiprocess
	// demo"), and ApplicationVersion is the version of its own contract:
	// processes of one application whose versions differ refuse each
	// other (ErrVersionMismatch). Bump it on any change of the
	// application's schema that an older peer would misunderstand.
	Application        string
	ApplicationVersion uint32

	// ExecutableDir is where SpawnProcess looks for executables. Empty
	// means the directory of this process's own executable.
	ExecutableDir string

	// SelfRoles are the roles this binary can play when it spawns itself
	// (see RunRole): SpawnProcess(ctx, name) starts this binary in role
	// name when no executable called name is found, and logs which it
	// spawned.
	SelfRoles []string

	// ShutdownTimeout is how long a child whose Init was released may
	// take to exit before it is killed. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// StartTimeout bounds how long a spawned child may take to answer its
	// handshake. Zero means DefaultStartTimeout.
	StartTimeout time.Duration

	// Env is the environment of spawned children; nil means this
	// process's own. EnvDebug (and EnvRole) are set on top of it.
	Env []string

	// Stdout and Stderr are given to spawned children directly; nil means
	// this process's own.
	Stdout, Stderr *os.File

	// MaxConnections is how many connections each ListenAddress listener
	// serves at once; further clients wait until one closes. Zero means
	// DefaultMaxConnections (16); negative, no limit.
	MaxConnections int

	// MessageTimeout drops a peer that leaves a message incomplete for
	// longer, on every connection; an idle peer is never dropped. Zero
	// means DefaultMessageTimeout (10 s); negative, no timeout.
	MessageTimeout time.Duration

	// WriteTimeout drops a peer that takes no byte of what this process
	// writes to it for longer (a peer that stops reading), on every
	// connection; an idle or slow but steady peer is never dropped. Zero
	// means DefaultWriteTimeout (10 s); negative, no timeout.
	WriteTimeout time.Duration

	// Limits bound what one peer may make this process hold (message
	// size, calls and bytes in flight, queues, tables, reading depth), on
	// every connection. The zero value means protocol's defaults;
	// protocol.Limits documents each.
	Limits protocol.Limits

	// Interceptor, if set, runs around every call made or served through
	// generated code on every connection of the Ipc (see mp.Interceptor):
	// for metrics or tracing. DebugIPC's call log runs inside it.
	Interceptor mp.Interceptor

	// LegacySubsystems maps subsystem names to the values of the old
	// Subsystem enum that lifetime events carry for peers that predate
	// LifetimeEvent.subsystemName (the reference program's). Names it
	// does not list are sent as "process".
	LegacySubsystems map[string]control.Subsystem
}

// Context is the state that an Ipc shares with the Init implementations it
// serves, as Bitcoin Core's ipc::Context is.
type Context struct {
	// ExeName is this executable's name, or its role.
	ExeName string
	// Logger is the process's logger; never nil (a discarding logger when
	// none was given).
	Logger *slog.Logger
	// DebugIPC reports whether every call is logged.
	DebugIPC bool
	// Lifetime records this process's lifetime events and streams them
	// to subscribers (Control.subscribeLifetime).
	Lifetime *Lifetime

	app      string
	version  uint32
	stopOnce sync.Once
	stopReq  chan struct{}
	status   atomic.Int32 // the exit status StartSpawnedProcess returns
}

// RequestStop asks the process to shut down, as Control.stop does: it
// closes the channel StopRequested returns. It never blocks.
func (c *Context) RequestStop() {
	c.stopOnce.Do(func() { close(c.stopReq) })
}

// StopWithStatus asks the process to shut down, as RequestStop does, and
// to exit with status (StartSpawnedProcess returns it): for a process
// that stops because it cannot go on, such as one whose data is damaged,
// so that its supervisor can tell (RestartPolicy.Permanent). The first
// status set wins.
func (c *Context) StopWithStatus(status int) {
	c.status.CompareAndSwap(0, int32(status))
	c.RequestStop()
}

// StopRequested is closed once a stop has been requested.
func (c *Context) StopRequested() <-chan struct{} { return c.stopReq }

// Ipc spawns, serves and connects the processes of a program whose
// processes serve the Init interface I (a generated interface; its
// description is the generated IInterface variable).
type Ipc[I any] struct {
	*core
	init    *mp.Interface[I]
	newInit InitFactory[I]
}

// core is the part of an Ipc that does not depend on its Init's type.
type core struct {
	argv0 string
	opts  Options
	ctx   Context
	// serve makes the bootstrap capability of one incoming connection.
	serve func(*protocol.Conn) capnp.Client

	// tasks owns every goroutine the Ipc starts (peers, supervisors,
	// listeners); Close waits for it.
	tasks sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	peers       map[*peer]struct{}
	listeners   map[*listener]struct{}
	supervisors map[*supervisor]struct{}
}

// New returns the Ipc of the executable exeName (or role), started as
// argv0, for a program whose processes serve the Init that init
// describes. newInit makes the Init this process serves to each
// connection; nil means it serves none (a process that only spawns or
// connects): its peers then reach only the control channel.
func New[I any](exeName, argv0 string, init *mp.Interface[I], newInit InitFactory[I], opts *Options) *Ipc[I] {
	i := &Ipc[I]{
		core: &core{
			argv0:       argv0,
			peers:       make(map[*peer]struct{}),
			listeners:   make(map[*listener]struct{}),
			supervisors: make(map[*supervisor]struct{}),
		},
		init:    init,
		newInit: newInit,
	}
	if opts != nil {
		i.opts = *opts
	}
	if i.opts.ShutdownTimeout <= 0 {
		i.opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if i.opts.StartTimeout <= 0 {
		i.opts.StartTimeout = DefaultStartTimeout
	}
	logger := i.opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i.ctx = Context{
		ExeName:  exeName,
		Logger:   logger,
		DebugIPC: i.opts.DebugIPC,
		Lifetime: newLifetime(exeName, logger, i.opts.LegacySubsystems),
		app:      i.opts.Application,
		version:  i.opts.ApplicationVersion,
		stopReq:  make(chan struct{}),
	}
	i.serve = i.bootstrap
	return i
}

// Context returns the state shared with Init implementations.
func (i *Ipc[I]) Context() *Context { return &i.ctx }

// bootstrap is the capability one incoming connection is offered: the
// application's Init, with the control interface as a facet.
func (i *Ipc[I]) bootstrap(conn *protocol.Conn) capnp.Client {
	ctrl := &controlServer{c: &i.ctx}
	if i.newInit == nil {
		return control.ControlInterface.Capnp(ctrl)
	}
	app := i.newInit(&i.ctx, conn)
	if any(app) == nil {
		return control.ControlInterface.Capnp(ctrl)
	}
	return i.init.ServeWith(app, control.ControlInterface.Facet(ctrl))
}

// childConnOptions are protocolOptions for the socketpair between a
// parent and its child: its opening and ordinary end are logged at Debug,
// since the spawn, the handshake and the child's exit have lines of their
// own.
func (c *core) childConnOptions() *protocol.Options {
	opts := c.protocolOptions()
	opts.QuietConnections = true
	return opts
}

func (c *core) protocolOptions() *protocol.Options {
	return &protocol.Options{
		Logger:         c.ctx.Logger,
		DebugCalls:     c.opts.DebugIPC,
		MaxConnections: c.opts.MaxConnections,
		MessageTimeout: c.opts.MessageTimeout,
		WriteTimeout:   c.opts.WriteTimeout,
		Limits:         c.opts.Limits,
		Interceptor:    c.opts.Interceptor,
	}
}

// Close stops every child this Ipc spawned and is still running (as if its
// Init had been released), ends supervision, every listener and incoming
// connection, and waits for all of it. Proxies returned earlier fail their
// calls afterwards. Close is idempotent.
func (i *Ipc[I]) Close() error { return i.core.close() }

func (c *core) close() error {
	c.mu.Lock()
	c.closed = true
	peers := make([]*peer, 0, len(c.peers))
	for p := range c.peers {
		peers = append(peers, p)
	}
	listeners := make([]*listener, 0, len(c.listeners))
	for l := range c.listeners {
		listeners = append(listeners, l)
	}
	sups := make([]*supervisor, 0, len(c.supervisors))
	for s := range c.supervisors {
		sups = append(sups, s)
	}
	c.mu.Unlock()
	for _, s := range sups {
		s.stopSupervising()
	}
	for _, l := range listeners {
		l.cancel()
	}
	for _, p := range peers {
		p.stop()
	}
	c.tasks.Wait()
	c.ctx.Lifetime.close()
	return nil
}

// errClosed is returned by calls on a closed Ipc.
var errClosed = errors.New("ipc: closed")

func (c *core) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
