package ipc

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Names of the environment variables through which a parent hands a
// spawned child the settings it needs before the first call. Everything
// else reaches the child over IPC; never through extra arguments.
const (
	// EnvDebug carries the -debug categories, comma-separated ("ipc").
	EnvDebug = "MULTIPROCESS_DEBUG"
)

// DefaultShutdownTimeout is how long a stopped child is given to exit by
// itself before it is killed.
const DefaultShutdownTimeout = 10 * time.Second

// DefaultStartTimeout is how long a spawned child is given to answer its
// first call before it is killed.
const DefaultStartTimeout = 30 * time.Second

// ErrVersionMismatch is returned when two executables speak different
// protocol versions.
var ErrVersionMismatch = errors.New("ipc: protocol version mismatch")

// InitFactory makes the Init that one connection serves. Each connection
// gets its own, so that a slow call from one peer never stalls another.
type InitFactory func(ctx *Context, conn *protocol.Conn) schema.Init

// Options tunes an Ipc; a nil *Options means defaults.
type Options struct {
	// Logger receives the facade's and the connections' logs. Nil means
	// silent. It should already carry the process name and pid.
	Logger *slog.Logger

	// DebugIPC logs every call at debug level (the -debug=ipc setting).
	// Spawned children inherit it through EnvDebug.
	DebugIPC bool

	// ExecutableDir is where SpawnProcess looks for executables. Empty
	// means the directory of this process's own executable.
	ExecutableDir string

	// ShutdownTimeout is how long a child whose Init proxy was released
	// may take to exit before it is killed. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// StartTimeout bounds how long a spawned child may take to answer its
	// first call. Zero means DefaultStartTimeout.
	StartTimeout time.Duration

	// Env is the environment of spawned children; nil means this
	// process's own. EnvDebug is set on top of it.
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
	// every connection: spawned children, -ipcconnect and -ipcbind peers
	// alike. The zero value means protocol's defaults; protocol.Limits
	// documents each.
	Limits protocol.Limits
}

// Context is the state that an Ipc shares with the Init implementations it
// serves, as Bitcoin Core's ipc::Context is. Init implementations use it
// to log and to identify themselves to their peers.
type Context struct {
	// ExeName is this executable's name ("node", "wallet").
	ExeName string
	// Logger is the process's logger; never nil (a discarding logger when
	// none was given).
	Logger *slog.Logger
	// DebugIPC reports whether every call is logged.
	DebugIPC bool
	// Lifetime records this process's lifetime events and streams them
	// to subscribers (Init.subscribeLifetime).
	Lifetime *Lifetime

	stopOnce sync.Once
	stopReq  chan struct{}
}

// RequestStop asks the process to shut down, as Init.stop does: it closes
// the channel StopRequested returns. It never blocks.
func (c *Context) RequestStop() {
	c.stopOnce.Do(func() { close(c.stopReq) })
}

// StopRequested is closed once a stop has been requested.
func (c *Context) StopRequested() <-chan struct{} { return c.stopReq }

// Ipc spawns, serves and connects processes for one executable.
type Ipc struct {
	argv0   string
	newInit InitFactory
	opts    Options
	ctx     Context

	// tasks owns every goroutine the Ipc starts (child reapers, cleanups,
	// listeners); Close waits for it.
	tasks sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	peers     map[*peer]struct{}
	listeners map[*listener]struct{}
}

// New returns the Ipc of the executable exeName, started as argv0, which
// serves Inits made by newInit.
func New(exeName, argv0 string, newInit InitFactory, opts *Options) *Ipc {
	i := &Ipc{
		argv0:     argv0,
		newInit:   newInit,
		peers:     make(map[*peer]struct{}),
		listeners: make(map[*listener]struct{}),
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
		Lifetime: newLifetime(exeName, logger),
		stopReq:  make(chan struct{}),
	}
	return i
}

// Context returns the state shared with Init implementations.
func (i *Ipc) Context() *Context { return &i.ctx }

func (i *Ipc) protocolOptions() *protocol.Options {
	return &protocol.Options{
		Logger:         i.ctx.Logger,
		DebugCalls:     i.opts.DebugIPC,
		MaxConnections: i.opts.MaxConnections,
		MessageTimeout: i.opts.MessageTimeout,
		WriteTimeout:   i.opts.WriteTimeout,
		Limits:         i.opts.Limits,
	}
}

func (i *Ipc) serveInit(conn *protocol.Conn) capnp.Client {
	return capnp.Client(i.newInit(&i.ctx, conn))
}

// AddCleanup registers fn to run exactly once, when proxy (an Init proxy
// returned by SpawnProcess or ConnectAddress, or a copy of one) is
// released or its connection is lost, whichever comes first.
//
// For a proxy of a spawned child, fn runs after the child has been stopped
// and reaped, so a caller that releases the proxy can wait for that.
func (i *Ipc) AddCleanup(proxy capnp.Client, fn func()) error {
	if conn, ok := protocol.ConnOf(proxy); ok {
		i.mu.Lock()
		var owner *peer
		for p := range i.peers {
			if p.conn == conn {
				owner = p
			}
		}
		i.mu.Unlock()
		if owner != nil {
			owner.addCleanup(fn)
			return nil
		}
	}
	if err := protocol.AddCleanup(proxy, fn); err != nil {
		return fmt.Errorf("ipc: add cleanup: %w", err)
	}
	return nil
}

// Close stops every child this Ipc spawned and is still running (as if its
// proxy had been released), ends every listener and incoming connection,
// and waits for all of it. Proxies returned earlier fail their calls
// afterwards. Close is idempotent.
func (i *Ipc) Close() error {
	i.mu.Lock()
	i.closed = true
	peers := make([]*peer, 0, len(i.peers))
	for p := range i.peers {
		peers = append(peers, p)
	}
	listeners := make([]*listener, 0, len(i.listeners))
	for l := range i.listeners {
		listeners = append(listeners, l)
	}
	i.mu.Unlock()
	for _, l := range listeners {
		l.cancel()
	}
	for _, p := range peers {
		p.stop()
	}
	i.tasks.Wait()
	i.ctx.Lifetime.close()
	return nil
}

// executablePath returns where exeName is looked for: Options.ExecutableDir,
// else next to this process's own executable, else next to argv0.
func (i *Ipc) executablePath(exeName string) (string, error) {
	if i.opts.ExecutableDir != "" {
		return filepath.Join(i.opts.ExecutableDir, exeName), nil
	}
	path, err := process.ExecutablePath(exeName)
	if err != nil && i.argv0 != "" && filepath.Base(exeName) == exeName {
		return filepath.Join(filepath.Dir(i.argv0), exeName), nil
	}
	return path, err
}

// errClosed is returned by calls on a closed Ipc.
var errClosed = errors.New("ipc: closed")

func (i *Ipc) isClosed() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.closed
}
