package rpcconn

import (
	"context"
	"testing"
	"time"
)

// A call that makes its own connection close as it returns (a stop
// request: the process ends its connections while the call that asked
// for it is still returning) gets its Return: CloseAfterReturns waits
// for it, where Close would drop it. Rounds, as the close and the
// Return race.
func TestCloseAfterReturnsAnswersFirst(t *testing.T) {
	for range 50 {
		ctx := testCtx(t)
		var srv *Conn
		closed := make(chan struct{})
		h := &hookServer{fn: func(_ context.Context, s string) (string, error) {
			go func() {
				srv.CloseAfterReturns(10 * time.Second)
				close(closed)
			}()
			// Give the closing goroutine every chance to go first.
			time.Sleep(time.Millisecond)
			return "stopping: " + s, nil
		}}
		var imp *Import
		_, srv, imp = rolePair(t, h, time.Minute)
		got, err := directEcho(ctx, imp, "stop")
		if err != nil || got != "stopping: stop" {
			t.Fatalf("the call that closed its connection got (%q, %v), want its result", got, err)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("CloseAfterReturns still waits 10 s after the call returned")
		}
		<-srv.Done()
	}
}

// A call that does not return holds CloseAfterReturns up for grace
// only; its caller then fails as on Close.
func TestCloseAfterReturnsGraceBounds(t *testing.T) {
	ctx := testCtx(t)
	gate := make(chan struct{})
	defer close(gate)
	started := make(chan struct{}, 1)
	h := &hookServer{fn: func(_ context.Context, s string) (string, error) {
		started <- struct{}{}
		<-gate
		return s, nil
	}}
	_, srv, imp := rolePair(t, h, time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := directEcho(ctx, imp, "block")
		done <- err
	}()
	<-started
	returned := make(chan struct{})
	go func() {
		srv.CloseAfterReturns(50 * time.Millisecond)
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("CloseAfterReturns with a 50 ms grace still waits after 10 s")
	}
	select {
	case err := <-done:
		if !IsDisconnected(err) {
			t.Fatalf("the blocked call = %v, want a disconnection error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked call still waits 10 s after the connection closed")
	}
}
