package integration

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// SIGKILL of the child while 1000 calls from 16 goroutines are in flight:
// every call returns a disconnection error that errors.Is recognises; the
// parent keeps serving its other peers (a second child, and a client
// connected to its listening socket) during the failures and after; and
// its goroutines and descriptors return to where they started.
func TestKillChildDuringInflightCalls(t *testing.T) {
	const callers, perCaller = 16, 63 // 1008 calls
	fdsBefore := fdcheck.Count(t)
	goroutinesBefore := runtime.NumGoroutine()

	i := newIpc(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	w, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	pid := peerPid(t, w)

	// The other peers: a second child, and a client of the parent's
	// listening socket (another Ipc, as another process would be).
	other, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	sockDir := socketDir(t)
	if _, err := i.ListenAddress(sockDir, "unix"); err != nil {
		t.Fatal(err)
	}
	clientIpc := newIpc(t)
	client, err := clientIpc.ConnectAddress(ctx, sockDir, "test", "unix")
	if err != nil {
		t.Fatalf("connect to the parent: %v", err)
	}
	peers := map[string]schema.Init{"second child": other, "client of the parent": client}
	for name, p := range peers {
		if _, err := echoOnce(ctx, p); err != nil {
			t.Fatalf("%s: echo before the kill: %v", name, err)
		}
	}
	made, releaseEcho := w.MakeEcho(ctx, nil)
	echo := made.Result()

	var (
		started sync.WaitGroup
		done    sync.WaitGroup
		mu      sync.Mutex
		errs    []error
	)
	started.Add(callers)
	done.Add(callers)
	for range callers {
		go func() {
			defer done.Done()
			futs := make([]schema.Echo_echoAfter_Results_Future, 0, perCaller)
			var releases []func()
			for range perCaller {
				fut, release := echo.EchoAfter(ctx, func(p schema.Echo_echoAfter_Params) error {
					p.SetDelayMs(uint32(ipc.MaxEchoDelay / time.Millisecond))
					return p.SetEcho("in flight")
				})
				futs = append(futs, fut)
				releases = append(releases, release)
			}
			started.Done()
			for k, fut := range futs {
				_, err := fut.Struct()
				releases[k]()
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	started.Wait()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// While the calls fail, the other peers are served.
	for name, p := range peers {
		if _, err := echoOnce(ctx, p); err != nil {
			t.Errorf("%s: echo during the failures: %v", name, err)
		}
	}
	done.Wait()
	releaseEcho()
	w.Release()

	if len(errs) != callers*perCaller {
		t.Fatalf("%d calls returned, want %d", len(errs), callers*perCaller)
	}
	var wrong []error
	for _, err := range errs {
		if !errors.Is(err, protocol.ErrDisconnected) {
			wrong = append(wrong, err)
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d calls failed with an error that is not protocol.ErrDisconnected; first: %v", len(wrong), len(errs), wrong[0])
	}

	// The parent still works: spawn and call another child.
	w2, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatalf("spawn after the kill: %v", err)
	}
	if _, err := echoOnce(ctx, w2); err != nil {
		t.Fatalf("echo after the kill: %v", err)
	}
	w2.Release()
	for name, p := range peers {
		if _, err := echoOnce(ctx, p); err != nil {
			t.Errorf("%s: echo after the kill: %v", name, err)
		}
		p.Release()
	}
	if err := clientIpc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}

	// Goroutines and descriptors settle back (connections and reapers
	// end asynchronously; the deadline only turns a leak into a failure).
	settle := time.Now().Add(deadline)
	for {
		g, f := runtime.NumGoroutine(), fdcheck.Count(t)
		if g <= goroutinesBefore && f <= fdsBefore {
			t.Logf("%d calls failed with ErrDisconnected; goroutines %d -> %d, descriptors %d -> %d", len(errs), goroutinesBefore, g, fdsBefore, f)
			break
		}
		if time.Now().After(settle) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after the kill: %d goroutines (started with %d), %d descriptors (started with %d)\n%s", g, goroutinesBefore, f, fdsBefore, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echoOnce(ctx context.Context, init schema.Init) (string, error) {
	made, release := init.MakeEcho(ctx, nil)
	defer release()
	fut, release2 := made.Result().Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("again") })
	defer release2()
	res, err := fut.Struct()
	if err != nil {
		return "", err
	}
	return res.Result()
}
