package testapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gomultiprocess/multiprocess/mp"
)

// MaxDelay is the longest delay EchoAfter accepts.
const MaxDelay = time.Minute

// Server implements Init for the tests. Its methods take calls
// concurrently, so that a slow echoAfter holds up no other call on the
// same connection, unless Serial is set.
type Server struct {
	// Serial makes its calls run one at a time (package mp's ordering
	// rule), as an implementation that does not take concurrent calls.
	Serial bool

	// Log receives "delaying an echo" and "delayed echo canceled" at
	// Debug; nil means silent.
	Log *slog.Logger

	// ExitFunc ends the process for Exit (os.Exit in a child). Nil
	// refuses: a server in the test process itself must not end it.
	ExitFunc func(code int)
}

var _ Init = (*Server)(nil)

// TakesConcurrentCalls implements mp.Concurrent unless Serial is set.
func (s *Server) TakesConcurrentCalls() bool { return !s.Serial }

var _ mp.Concurrent = (*Server)(nil)

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Echo returns text.
func (s *Server) Echo(_ context.Context, text string) (string, error) { return text, nil }

// EchoAfter returns text after delayMs, or an error once the call is
// canceled; a delay over MaxDelay is refused.
func (s *Server) EchoAfter(ctx context.Context, text string, delayMs uint32) (string, error) {
	delay := time.Duration(delayMs) * time.Millisecond
	if delay > MaxDelay {
		return "", fmt.Errorf("delay %s is over the limit of %s", delay, MaxDelay)
	}
	s.log().Debug("delaying an echo", "delay", delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return text, nil
	case <-ctx.Done():
		s.log().Debug("delayed echo canceled", "delay", delay, "err", context.Cause(ctx))
		return "", fmt.Errorf("echo canceled before its delay of %s: %w", delay, context.Cause(ctx))
	}
}

// Pid returns this process's ID.
func (s *Server) Pid(context.Context) (int32, error) { return int32(os.Getpid()), nil }

// Exit ends the process with status code through ExitFunc.
func (s *Server) Exit(_ context.Context, code int32) error {
	if s.ExitFunc == nil {
		return errors.New("exit is not served in this process")
	}
	s.ExitFunc(int(code))
	return nil
}

// Getenv returns the environment variable name of this process.
func (s *Server) Getenv(_ context.Context, name string) (Init_Getenv_Results, error) {
	v, ok := os.LookupEnv(name)
	return Init_Getenv_Results{Value: v, Found: ok}, nil
}
