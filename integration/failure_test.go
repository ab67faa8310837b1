package integration

import (
	"errors"
	"io"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// SIGKILL of the child while 1008 calls from as many goroutines are in
// flight: every call returns a disconnection error that errors.Is
// recognises; the parent keeps serving its other peers (a second child,
// and a client connected to its listening socket) during the failures
// and after; and its goroutines and descriptors return to where they
// started.
func TestKillChildDuringInflightCalls(t *testing.T) {
	const calls = 1008
	fdsBefore := fdcheck.Count(t)
	goroutinesBefore := runtime.NumGoroutine()

	// The children log every call they serve (-debug=ipc, which the
	// Ipc passes on) to a pipe the test reads: the wallet's "delaying an
	// echo" lines say that the calls have arrived.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	childOut := newOutput()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(childOut, r)
	}()
	closePipe := sync.OnceFunc(func() {
		w.Close()
		<-copied // every child holding w has been reaped
		r.Close()
		if strings.Contains(childOut.String(), "DATA RACE") {
			t.Errorf("a child reported a data race:\n%s", childOut.String())
		}
	})
	t.Cleanup(closePipe)
	i := newIpcWith(t, func(o *ipc.Options) { o.DebugIPC, o.Stderr = true, w })

	ctx := testCtx(t)
	wallet, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	pid := peerPid(t, i, wallet)

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
		if _, err := nodeinit.Echo(ctx, p, "before"); err != nil {
			t.Fatalf("%s: echo before the kill: %v", name, err)
		}
	}
	echo, err := wallet.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}

	errs := make(chan error, calls)
	var done sync.WaitGroup
	done.Add(calls)
	for range calls {
		go func() {
			defer done.Done()
			_, err := echo.EchoAfter(ctx, "in flight", uint32(appinit.MaxEchoDelay/time.Millisecond))
			errs <- err
		}()
	}
	inFlight := regexp.MustCompile(`msg="delaying an echo" process=wallet pid=` + strconv.Itoa(pid) + ` `)
	for end := time.Now().Add(deadline); len(inFlight.FindAllStringIndex(childOut.String(), -1)) < calls; {
		if time.Now().After(end) {
			t.Fatalf("%d of %d calls reached the wallet", len(inFlight.FindAllStringIndex(childOut.String(), -1)), calls)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// While the calls fail, the other peers are served.
	for name, p := range peers {
		if _, err := nodeinit.Echo(ctx, p, "during"); err != nil {
			t.Errorf("%s: echo during the failures: %v", name, err)
		}
	}
	done.Wait()
	close(errs)
	mp.Release(echo)
	mp.Release(wallet)

	var n int
	var wrong []error
	for err := range errs {
		n++
		if !errors.Is(err, mp.ErrDisconnected) {
			wrong = append(wrong, err)
		}
	}
	if n != calls {
		t.Fatalf("%d calls returned, want %d", n, calls)
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d calls failed with an error that is not mp.ErrDisconnected; first: %v", len(wrong), n, wrong[0])
	}

	// The parent still works: spawn and call another child.
	w2, err := i.SpawnProcess(ctx, "wallet")
	if err != nil {
		t.Fatalf("spawn after the kill: %v", err)
	}
	if _, err := nodeinit.Echo(ctx, w2, "after"); err != nil {
		t.Fatalf("echo after the kill: %v", err)
	}
	mp.Release(w2)
	for name, p := range peers {
		if _, err := nodeinit.Echo(ctx, p, "after"); err != nil {
			t.Errorf("%s: echo after the kill: %v", name, err)
		}
		mp.Release(p)
	}
	if err := clientIpc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	closePipe()

	// Goroutines and descriptors settle back (connections and reapers
	// end asynchronously; the deadline only turns a leak into a failure).
	settle := time.Now().Add(deadline)
	for {
		g, f := runtime.NumGoroutine(), fdcheck.Count(t)
		if g <= goroutinesBefore && f <= fdsBefore {
			t.Logf("%d calls failed with ErrDisconnected; goroutines %d -> %d, descriptors %d -> %d", n, goroutinesBefore, g, fdsBefore, f)
			break
		}
		if time.Now().After(settle) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after the kill: %d goroutines (started with %d), %d descriptors (started with %d)\n%s", g, goroutinesBefore, f, fdsBefore, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
