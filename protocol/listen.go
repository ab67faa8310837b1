package protocol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"
)

// Listen accepts connections from l and serves each as Serve does, with
// its own bootstrap object from newInit, in a goroutine that Listen owns.
// Listen owns l. A connection that fails ends alone: the listener keeps
// serving the others. Transient Accept errors (out of descriptors, a
// connection aborted before it was accepted) are logged and retried
// after a growing pause.
//
// At most Options.MaxConnections connections are served at once. At the
// limit Listen stops calling Accept until one of them ends, so further
// clients wait in the socket's backlog instead of being refused; a line
// is logged each time the limit is reached.
//
// When ctx ends, Listen shuts down in this order, logging each step: it
// closes l, so that no further connection is accepted (for a listener
// from package process, that also removes its socket file); then it ends
// every connection it accepted and waits until each has ended and its
// cleanups have run; then it returns ctx.Err(). When Accept fails for
// good, the same shutdown follows and Listen returns the Accept error.
func Listen(ctx context.Context, l net.Listener, newInit func(*Conn) capnp.Client, opts *Options) error {
	log := opts.logger().With("listener", addrString(l.Addr()))

	// Connections outlive ctx until l is closed: a client must never be
	// accepted after the others were told to go.
	connCtx, endConns := context.WithCancel(context.WithoutCancel(ctx))
	defer endConns()
	var (
		conns sync.WaitGroup // one per connection goroutine
		open  atomic.Int64   // connections being served, for log lines
	)
	var slots chan struct{} // holds a token per connection; nil: no limit
	limit := opts.maxConnections()
	if limit > 0 {
		slots = make(chan struct{}, limit)
	}

	// The closer closes l when ctx ends, which unblocks Accept, or when
	// the accept loop returns first.
	loopDone := make(chan struct{})
	var closer sync.WaitGroup
	closer.Add(1)
	go func() {
		defer closer.Done()
		select {
		case <-ctx.Done():
		case <-loopDone:
		}
		l.Close()
	}()

	err := func() error {
		var pause time.Duration
		for {
			if slots != nil {
				select {
				case slots <- struct{}{}:
				default:
					log.Warn("connection limit reached; further clients wait until one closes", "max_connections", limit)
					select {
					case slots <- struct{}{}:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			nc, err := l.Accept()
			if err == nil && ctx.Err() != nil {
				nc.Close()
				err = ctx.Err()
			}
			if err != nil {
				if slots != nil {
					<-slots
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !acceptRetryable(err) {
					return fmt.Errorf("protocol: accept: %w", err)
				}
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "err", err, "pause", pause)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
					return ctx.Err()
				}
				continue
			}
			pause = 0
			open.Add(1)
			conns.Add(1)
			go func() {
				defer conns.Done()
				// Serve logs how and why the connection ended, and
				// returns once its state is released.
				_ = Serve(connCtx, nc, newInit, opts)
				open.Add(-1)
				if slots != nil {
					<-slots
				}
			}()
		}
	}()

	close(loopDone)
	closer.Wait()
	n := open.Load()
	log.Info("stopped accepting connections", "open", n)
	endConns()
	conns.Wait()
	log.Info("ended incoming connections", "count", n)
	return err
}

// acceptRetryable reports whether an Accept error is worth retrying: the
// process or system ran out of something that may come back, or a client
// gave up before we accepted it.
func acceptRetryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
