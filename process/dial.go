package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// ErrNoListener means nothing accepts connections at a socket path: the file
// is missing, or it is a socket that nobody listens on any more.
var ErrNoListener = errors.New("process: nothing is listening")

// noListenerError reads as ErrNoListener with the address, and unwraps to
// both ErrNoListener and the system call error that showed it.
type noListenerError struct {
	path string
	err  error
}

func (e *noListenerError) Error() string {
	return ErrNoListener.Error() + " at " + Address(e.path)
}

func (e *noListenerError) Unwrap() []error { return []error{ErrNoListener, e.err} }

// Dial connects to the unix stream socket at path. If nothing listens there
// (ENOENT or ECONNREFUSED), the error wraps ErrNoListener and reads
// "process: nothing is listening at unix:/path"; callers add their own hint.
// A listener whose backlog is full is alive but busy, so Dial retries until
// ctx, which bounds the whole connect, is done.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	if err := checkPathLen(path); err != nil {
		return nil, err
	}
	var d net.Dialer
	backoff := time.Millisecond
	for {
		c, err := d.DialContext(ctx, "unix", path)
		switch {
		case err == nil:
			return c, nil
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return nil, &noListenerError{path: path, err: err}
		case !errors.Is(err, syscall.EAGAIN):
			return nil, fmt.Errorf("process: %w", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("process: dial %s: listener's backlog stayed full: %w", Address(path), context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}
