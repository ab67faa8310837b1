package protocol_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// listen runs protocol.Listen on a fresh unix socket and returns its
// path, a function that cancels Listen's context, and Listen's result.
func listen(t *testing.T, newInit func(*protocol.Conn) capnp.Client, opts *protocol.Options) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	fdcheck.Check(t, patience)
	dir, err := os.MkdirTemp("", "mp") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ch <- protocol.Listen(ctx, l, newInit, opts)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(patience):
			t.Errorf("Listen did not return")
		}
	})
	return path, cancel, ch
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// slowFactory serves a new slowServer per connection, all sharing the
// same channels.
func slowFactory(shared *slowServer) func(*protocol.Conn) capnp.Client {
	return func(c *protocol.Conn) capnp.Client {
		s := &slowServer{entered: shared.entered, release: shared.release}
		return protocol.NewServer(testschema.Slow_Methods(nil, s), s, nil)
	}
}

func connectSlow(t *testing.T, path string, opts *protocol.Options) (*protocol.Conn, testschema.Slow) {
	t.Helper()
	conn, client := connect(t, dial(t, path), opts)
	s := testschema.Slow(client)
	t.Cleanup(s.Release)
	return conn, s
}

func TestListenSlowPeerDoesNotStallOthers(t *testing.T) {
	ctx := testContext(t)
	shared := newSlow()
	path, _, _ := listen(t, slowFactory(shared), nil)
	_, first := connectSlow(t, path, nil)
	_, second := connectSlow(t, path, nil)

	f, release := first.Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
		p.SetMs(uint32(patience / time.Millisecond))
		return nil
	})
	defer release()
	waitDone(t, "sleep to start", shared.entered)
	if got, err := slowEcho(ctx, second, "other peer"); err != nil || got != "other peer" {
		t.Fatalf("second peer's echo = %q, %v", got, err)
	}
	select {
	case <-f.Done():
		t.Fatalf("sleep returned before it was released")
	default:
	}
	close(shared.release)
	if _, err := f.Struct(); err != nil {
		t.Errorf("sleep: %v", err)
	}
}

func TestMaxMessageSize(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	path, _, _ := listen(t, slowFactory(newSlow()), &protocol.Options{Logger: log, Limits: protocol.Limits{MaxMessageSize: 64 << 10}})
	bigConn, big := connectSlow(t, path, nil)
	_, other := connectSlow(t, path, nil)
	for _, s := range []testschema.Slow{big, other} {
		if _, err := slowEcho(ctx, s, "small"); err != nil {
			t.Fatalf("small echo: %v", err)
		}
	}

	_, err := slowEcho(ctx, big, strings.Repeat("x", 128<<10))
	if !protocol.IsDisconnected(err) {
		t.Fatalf("echo over the limit: %v, want an error for which IsDisconnected is true", err)
	}
	waitDone(t, "client Done", bigConn.Done())
	if err := bigConn.Err(); !errors.Is(err, protocol.ErrDisconnected) || !strings.Contains(err.Error(), "message too large") {
		t.Errorf("client Err = %v, want ErrDisconnected with the peer's reason", err)
	}
	eventually(t, "log line", func() bool {
		return len(logBuf.Lines("level=INFO", "connection closed", "reason=error", "message too large")) == 1
	})

	// The limit is on messages received: replies may be larger.
	if got, err := slowEcho(ctx, other, strings.Repeat("y", 60<<10)); err != nil || len(got) != 60<<10 {
		t.Errorf("other connection's echo after the limit hit = %d bytes, %v", len(got), err)
	}
	_, late := connectSlow(t, path, nil)
	if _, err := slowEcho(ctx, late, "new"); err != nil {
		t.Errorf("new connection's echo: %v", err)
	}
}

func TestGarbageEndsConnection(t *testing.T) {
	// A header announcing 513 segments, each of one word: go-capnp's
	// decoder takes it, the reference implementation and we do not.
	var many []byte
	many = binary.LittleEndian.AppendUint32(many, 512)
	for i := 0; i < 513; i++ {
		many = binary.LittleEndian.AppendUint32(many, 1)
	}
	many = append(many, make([]byte, 4+513*8)...)

	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"huge segment count", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, "segment"},
		{"513 segments", many, "513 segments"},
		{"bad root pointer", []byte{0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "read root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t)
			log, logBuf := newLogger(t, "server")
			a, b := socketpair(t)
			served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log})
			if _, err := a.Write(c.input); err != nil {
				t.Fatal(err)
			}
			// The server hangs up, possibly after an Abort.
			a.SetReadDeadline(time.Now().Add(patience))
			if _, err := io.Copy(io.Discard, a); err != nil {
				t.Errorf("reading until the server hangs up: %v", err)
			}
			err := waitErr(t, "Serve", served)
			if !errors.Is(err, protocol.ErrDisconnected) {
				t.Errorf("Serve = %v, want an error wrapping ErrDisconnected", err)
			}
			if len(logBuf.Lines("connection closed", "reason=error", c.want)) != 1 {
				t.Errorf("no 'connection closed' line with reason=error and %q", c.want)
			}
		})
	}
}

func TestListenEndsWithContextAndLeaksNothing(t *testing.T) {
	// Warm up the runtime's poller so that its descriptors are counted
	// in the baseline.
	a, b := socketpair(t)
	a.Close()
	b.Close()
	before := fdcheck.Count(t)

	func() {
		ctx := testContext(t)
		shared := newSlow()
		path, cancel, listened := listen(t, slowFactory(shared), nil)
		var conns []*protocol.Conn
		var clients []testschema.Slow
		for i := 0; i < 3; i++ {
			conn, s := connectSlow(t, path, nil)
			if _, err := slowEcho(ctx, s, "hi"); err != nil {
				t.Fatalf("echo: %v", err)
			}
			conns = append(conns, conn)
			clients = append(clients, s)
		}
		f, release := clients[0].Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
			p.SetMs(uint32(patience / time.Millisecond))
			return nil
		})
		defer release()
		waitDone(t, "sleep to start", shared.entered)

		cancel()
		if err := waitErr(t, "Listen", listened); !errors.Is(err, context.Canceled) {
			t.Errorf("Listen = %v, want context.Canceled", err)
		}
		if _, err := f.Struct(); !protocol.IsDisconnected(err) {
			t.Errorf("pending sleep: %v, want an error for which IsDisconnected is true", err)
		}
		for _, conn := range conns {
			waitDone(t, "client Done", conn.Done())
			if !errors.Is(conn.Err(), protocol.ErrDisconnected) {
				t.Errorf("client Err = %v, want one wrapping ErrDisconnected", conn.Err())
			}
			conn.Close()
		}
		for _, s := range clients {
			s.Release()
		}
	}()

	if after := fdcheck.Count(t); after != before {
		t.Errorf("%d descriptors open after Listen returned, %d before", after, before)
	}
	goleak.VerifyNone(t)
}
