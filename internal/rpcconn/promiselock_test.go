package rpcconn

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
)

// A program that calls Future.Client twice on the same path of a call in
// flight (a generated Result() twice, say) leaves go-capnp's promise
// locked. When that call's Return arrives, the connection logs it and
// carries on: calls made after it are answered. (Before, the reader
// waited for the lock for ever, and every call on the connection with
// it.) The test then gives the lock back, as nothing in a real program
// can, and the promise resolves.
func TestLeakedPromiseLockSparesTheConnection(t *testing.T) {
	var logs syncbuf.Buffer
	cl, _ := connPair(t, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &Options{BootstrapClient: newTestServer().client()})
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()

	slow, release := testschema.Slow(boot).Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
		p.SetMs(100)
		return nil
	})
	slow.Future.Field(0, nil).Client()
	slow.Future.Field(0, nil).Client() // go-capnp returns with the lock held

	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "go-capnp left its promise locked") {
		if time.Now().After(deadline) {
			t.Fatalf("nothing logged about the locked promise; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		if got, err := echo(ctx, schema.Echo(boot), "after"); err != nil || got != "after" {
			t.Fatalf("echo %d after the locked promise's Return: %q, %v", i, got, err)
		}
	}
	select {
	case <-slow.Done():
		t.Fatal("the call resolved while go-capnp held its promise's lock")
	default:
	}

	promiseLock(futurePromise(t, slow.Future)).Unlock()
	<-slow.Done()
	if _, err := slow.Struct(); err != nil {
		t.Errorf("the call, once its promise's lock was given back: %v", err)
	}
	release()
}

// futurePromise returns the Promise behind f, which go-capnp does not
// export: the first field of a Future.
func futurePromise(t *testing.T, f *capnp.Future) *capnp.Promise {
	field := reflect.TypeFor[capnp.Future]().Field(0)
	if field.Name != "promise" || field.Type != reflect.TypeFor[*capnp.Promise]() || field.Offset != 0 {
		t.Fatalf("capnp.Future's first field is %s %v: go-capnp's layout changed", field.Name, field.Type)
	}
	return *(**capnp.Promise)(unsafe.Pointer(f))
}
