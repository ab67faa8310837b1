package ipc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// DefaultMaxConnections is how many connections a ListenAddress listener
// serves at once when Options.MaxConnections is zero.
const DefaultMaxConnections = protocol.DefaultMaxConnections

// DefaultMessageTimeout is how long a peer may leave a message incomplete
// before it is dropped, when Options.MessageTimeout is zero.
const DefaultMessageTimeout = protocol.DefaultMessageTimeout

// DefaultWriteTimeout is how long a peer may take no byte of what this
// process writes to it before it is dropped, when Options.WriteTimeout
// is zero.
const DefaultWriteTimeout = protocol.DefaultWriteTimeout

// listener is one address this executable accepts connections on.
type listener struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// ListenAddress accepts connections on address, as given to -ipcbind, and
// serves each connection its own Init until DisconnectIncoming or Close.
// "unix" and "unix:" mean <dataDir>/<exeName>.sock; "unix:PATH" is relative
// to dataDir unless absolute. It returns the canonical address
// ("unix:/full/path") once the socket is listening; binding errors (a live
// process on the path, something that is not a socket, a path too long)
// are returned as they happen. The rules of the socket itself (mode 0600,
// peers of another uid refused and logged) are process.Listen's.
//
// At most Options.MaxConnections connections are served at once; further
// clients wait until one closes. A peer that leaves a message incomplete
// for longer than Options.MessageTimeout is dropped.
func (i *Ipc[I]) ListenAddress(dataDir, address string) (string, error) {
	return i.core.listenAddress(dataDir, address)
}

func (i *core) listenAddress(dataDir, address string) (string, error) {
	path, err := process.ParseAddress(dataDir, i.ctx.ExeName, address)
	if err != nil {
		return "", fmt.Errorf("ipc: listen on %q: %w", address, err)
	}
	canonical := process.Address(path)
	log := i.ctx.Logger.With("address", canonical)
	l, err := process.Listen(path, &process.ListenConfig{
		OnRefused: func(cred process.PeerCred, err error) {
			log.Warn("refused a connection", "peer_pid", cred.PID, "peer_uid", cred.UID, "err", err)
		},
	})
	if err != nil {
		return "", fmt.Errorf("ipc: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	li := &listener{cancel: cancel, done: make(chan struct{})}
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		cancel()
		_ = l.Close()
		return "", fmt.Errorf("ipc: listen on %s: %w", canonical, errClosed)
	}
	i.listeners[li] = struct{}{}
	i.tasks.Add(1)
	i.mu.Unlock()
	log.Info("listening for IPC connections")
	go func() {
		defer i.tasks.Done()
		defer close(li.done)
		// Listen stops accepting (closing l removes the socket file),
		// then ends and waits for the connections, logging both steps.
		// Connections accepted here are mostly short ones of
		// command-line clients: their opening and end are logged at
		// Debug.
		opts := i.protocolOptions()
		opts.QuietConnections = true
		err := protocol.Listen(ctx, l, i.serve, opts)
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("listener failed", "err", err)
		}
		switch _, serr := os.Lstat(path); {
		case errors.Is(serr, fs.ErrNotExist):
			log.Info("stopped listening; socket file removed")
		case serr != nil:
			log.Warn("stopped listening; cannot check that the socket file is gone", "err", serr)
		default:
			// Closing l removes the socket it bound, and nothing else:
			// another process replaced it, or the removal failed.
			log.Warn("stopped listening; a file remains at the socket path")
		}
		i.mu.Lock()
		delete(i.listeners, li)
		i.mu.Unlock()
	}()
	return canonical, nil
}

// Serve serves this process's Init, with the control channel, on nc, a
// connection this process accepted or was given by other means, until
// the connection ends or ctx does; see protocol.Serve for what it
// returns. nc is owned by Serve.
func (i *Ipc[I]) Serve(ctx context.Context, nc net.Conn) error {
	return protocol.Serve(ctx, nc, i.serve, i.protocolOptions())
}

// DisconnectIncoming stops accepting connections on every address given to
// ListenAddress, ends the connections accepted there and removes their
// socket files. Connections this process made itself, to spawned children
// or to other listeners, are left alone.
func (i *Ipc[I]) DisconnectIncoming() { i.core.disconnectIncoming() }

func (i *core) disconnectIncoming() {
	i.mu.Lock()
	ls := make([]*listener, 0, len(i.listeners))
	for l := range i.listeners {
		ls = append(ls, l)
	}
	i.mu.Unlock()
	for _, l := range ls {
		l.cancel()
	}
	for _, l := range ls {
		<-l.done
	}
}

// ConnectAddress connects to the process listening on address, as given to
// -ipcconnect, and returns its Init. "unix" and "unix:" mean
// <dataDir>/<destName>.sock. "auto" connects to the default address if a
// process listens there and otherwise returns the zero I (nil) and no
// error, for callers that carry on alone; "0" and "" mean not to connect,
// and return the same. When nothing listens at an explicit address, the
// error wraps process.ErrNoListener and reads "ipc: connect: process:
// nothing is listening at unix:/path": the application knows what to tell
// its user to start. The handshake travels with
// the first calls, as Spawn's does (Handshake waits for it); a listener of
// another version of the application ends the connection. Releasing the
// Init closes the connection.
func (i *Ipc[I]) ConnectAddress(ctx context.Context, dataDir, destName, address string) (I, error) {
	var zero I
	if address == "0" || address == "" {
		return zero, nil
	}
	auto := address == "auto"
	if auto {
		address = "unix"
	}
	path, err := process.ParseAddress(dataDir, destName, address)
	if err != nil {
		return zero, fmt.Errorf("ipc: connect to %q: %w", address, err)
	}
	canonical := process.Address(path)
	nc, err := process.Dial(ctx, path)
	if err != nil {
		if auto && errors.Is(err, process.ErrNoListener) {
			return zero, nil
		}
		return zero, fmt.Errorf("ipc: connect: %w", err)
	}
	opts := i.protocolOptions()
	opts.RemoteName = canonical
	conn, boot, err := protocol.Connect(ctx, nc, opts)
	if err != nil {
		_ = nc.Close()
		return zero, fmt.Errorf("ipc: connect to %s: %w", canonical, err)
	}
	if _, err := i.newPeer(destName, nil, conn, boot, i.ctx.Logger.With("address", canonical)); err != nil {
		boot.Release()
		_ = conn.Close()
		return zero, fmt.Errorf("ipc: connect to %s: %w", canonical, err)
	}
	return i.init.FromCapnp(boot), nil
}
