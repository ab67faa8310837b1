package rpcconn

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
)

// A caller that never releases its answers keeps their places among the
// MaxCalls in flight: once they are all kept, the next call waits, and
// the connection says why in its log instead of waiting silently. A
// release lets the waiting call through. (The Bootstrap question keeps a
// place too while its capability is held: MaxCalls 5 is the bootstrap
// and four echoes.)
func TestUnreleasedAnswersWarn(t *testing.T) {
	var logs syncbuf.Buffer
	cl, _ := connPair(t, &Options{MaxCalls: 5, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &Options{BootstrapClient: newTestServer().client()})
	ctx := testCtx(t)
	boot := cl.Bootstrap(ctx)
	defer boot.Release()

	var kept []capnp.ReleaseFunc
	for range 4 {
		f, rel := schema.Echo(boot).Echo(ctx, func(p schema.Echo_echo_Params) error { return p.SetEcho("kept") })
		if _, err := f.Struct(); err != nil {
			t.Fatalf("echo: %v", err)
		}
		kept = append(kept, rel) // returned, not released
	}
	done := make(chan error, 1)
	go func() {
		_, err := echo(ctx, schema.Echo(boot), "waits")
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "never released by their callers") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about unreleased answers; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("a call went through while every place was kept: %v", err)
	default:
	}
	if !strings.Contains(logs.String(), "unreleased=5") {
		t.Errorf("warning does not count the unreleased answers:\n%s", logs.String())
	}
	kept[0]()
	if err := <-done; err != nil {
		t.Fatalf("the waiting call after a release: %v", err)
	}
	for _, rel := range kept[1:] {
		rel()
	}
	if n := strings.Count(logs.String(), "never released by their callers"); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
}
