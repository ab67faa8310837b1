package protocol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
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
// Listen returns ctx.Err() when ctx ends, after closing l and every
// connection and waiting for their goroutines; or the Accept error when
// Accept fails for good, after the same clean-up.
func Listen(ctx context.Context, l net.Listener, newInit func(*Conn) capnp.Client, opts *Options) error {
	log := opts.logger().With("listener", addrString(l.Addr()))
	inner, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wg.Add(1)
	go func() {
		defer wg.Done()
		<-inner.Done()
		l.Close()
	}()

	var pause time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Serve logs how and why the connection ended.
			_ = Serve(inner, nc, newInit, opts)
		}()
	}
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
