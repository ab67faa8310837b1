package protocol_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// trickleConn delivers every Write in two parts, pause apart: the first
// four bytes, then the rest. A message is then partly received for at
// least pause.
type trickleConn struct {
	net.Conn
	pause time.Duration
}

func (c trickleConn) Write(p []byte) (int, error) {
	if len(p) <= 4 {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:4])
	if err != nil {
		return n, err
	}
	time.Sleep(c.pause)
	m, err := c.Conn.Write(p[4:])
	return n + m, err
}

func echoOnce(t *testing.T, e schema.Echo, msg string) error {
	t.Helper()
	got, err := callEcho(testContext(t), e, msg)
	if err == nil && got != msg {
		t.Fatalf("echo %q returned %q", msg, got)
	}
	return err
}

// A peer that sends part of a message and then nothing is dropped once
// the timeout has run from the message's first byte, with a reason that
// says so.
func TestMessageTimeoutDropsIncompleteMessage(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	a, b := socketpair(t)
	served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log, MessageTimeout: timeout})

	// One segment of four words announced; one word sent.
	header := []byte{0, 0, 0, 0, 4, 0, 0, 0}
	start := time.Now()
	if _, err := a.Write(append(header, make([]byte, 8)...)); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.Copy(io.Discard, a); err != nil {
		t.Fatalf("reading until the server hangs up: %v", err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("dropped after %s, before the timeout of %s", elapsed, timeout)
	}
	err := waitErr(t, "Serve", served)
	if !errors.Is(err, protocol.ErrDisconnected) || !errors.Is(err, protocol.ErrMessageTimeout) {
		t.Errorf("Serve = %v, want an error wrapping ErrDisconnected and ErrMessageTimeout", err)
	}
	if len(logBuf.Lines("connection closed", "reason=error", "left a message incomplete", "200ms")) != 1 {
		t.Errorf("no 'connection closed' line with the timeout as reason")
	}
}

// The timeout counts from a message's first byte: a peer that stays idle
// for many times the timeout is not dropped, nor is one whose messages
// arrive in parts, slowly but within the timeout, with idle times between.
func TestMessageTimeoutSparesIdleAndSlowPeers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		pause   time.Duration // between the parts of each write; 0: none
		idle    time.Duration // between calls
	}{
		{"idle", 100 * time.Millisecond, 0, 300 * time.Millisecond},
		{"slow but in time", time.Second, 50 * time.Millisecond, 0},
		// The deadline armed for the parts of one message fires while the
		// peer is idle: it is cleared, and the next message gets a new one.
		{"slow, then idle", 150 * time.Millisecond, 20 * time.Millisecond, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			log, logBuf := newLogger(t, "server")
			a, b := socketpair(t)
			serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log, MessageTimeout: tc.timeout})
			var nc net.Conn = a
			if tc.pause > 0 {
				nc = trickleConn{Conn: a, pause: tc.pause}
			}
			conn, client := connect(t, nc, nil)
			e, release := makeEcho(ctx, schema.Init(client))
			defer release()
			for i := range 2 {
				if err := echoOnce(t, e, "still here"); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
				time.Sleep(tc.idle)
			}
			if err := conn.Err(); err != nil {
				t.Errorf("client connection ended: %v", err)
			}
			if lines := logBuf.Lines("connection closed"); len(lines) != 0 {
				t.Errorf("server closed the connection: %q", lines)
			}
		})
	}
}

// A peer whose message stays incomplete for longer than the timeout, even
// though bytes keep coming, is dropped: the timeout bounds the whole
// message.
func TestMessageTimeoutDropsTooSlowPeer(t *testing.T) {
	const timeout = 150 * time.Millisecond
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	a, b := socketpair(t)
	served := serve(t, ctx, b, newInit(false), &protocol.Options{Logger: log, MessageTimeout: timeout})
	_, client := connect(t, trickleConn{Conn: a, pause: 3 * timeout}, nil)
	e, release := makeEcho(ctx, schema.Init(client))
	defer release()
	if err := echoOnce(t, e, "too slow"); !protocol.IsDisconnected(err) {
		t.Fatalf("echo from a too slow peer: %v, want an error for which IsDisconnected is true", err)
	}
	if err := waitErr(t, "Serve", served); !errors.Is(err, protocol.ErrMessageTimeout) {
		t.Errorf("Serve = %v, want an error wrapping ErrMessageTimeout", err)
	}
	if len(logBuf.Lines("connection closed", "reason=error", "left a message incomplete")) != 1 {
		t.Errorf("no 'connection closed' line with the timeout as reason")
	}
}

// With MaxConnections open, a further client is not refused: its connect
// succeeds and its call waits until one of the others ends.
func TestListenMaxConnections(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	path, _, _ := listen(t, slowFactory(newSlow()), &protocol.Options{Logger: log, MaxConnections: 2})
	first, a := connectSlow(t, path, nil)
	_, b := connectSlow(t, path, nil)
	for _, s := range []testschema.Slow{a, b} {
		if _, err := slowEcho(ctx, s, "in"); err != nil {
			t.Fatalf("echo: %v", err)
		}
	}
	eventually(t, "the limit's log line", func() bool {
		return len(logBuf.Lines("level=WARN", "connection limit reached", "max_connections=2")) == 1
	})

	third, c := connectSlow(t, path, nil)
	answered := make(chan error, 1)
	go func() {
		_, err := slowEcho(ctx, c, "waiting")
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("third client answered (%v) while two were connected", err)
	case <-time.After(settle):
	}
	if err := third.Err(); err != nil {
		t.Fatalf("third client's connection ended while waiting: %v", err)
	}

	first.Close()
	if err := waitErr(t, "third client's echo", answered); err != nil {
		t.Fatalf("third client's echo after one left: %v", err)
	}
	if _, err := slowEcho(ctx, b, "still in"); err != nil {
		t.Errorf("second client's echo: %v", err)
	}
	if n := len(logBuf.Lines("connection opened")); n != 3 {
		t.Errorf("%d connections opened, want 3", n)
	}
}

// A negative MaxConnections means no limit.
func TestListenNoConnectionLimit(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	path, _, _ := listen(t, slowFactory(newSlow()), &protocol.Options{Logger: log, MaxConnections: -1})
	for i := range protocol.DefaultMaxConnections + 2 {
		_, s := connectSlow(t, path, nil)
		if _, err := slowEcho(ctx, s, "hi"); err != nil {
			t.Fatalf("echo on connection %d: %v", i, err)
		}
	}
	if lines := logBuf.Lines("connection limit reached"); len(lines) != 0 {
		t.Errorf("limit reached without a limit: %q", lines)
	}
}

// On shutdown Listen first stops accepting, then ends the connections,
// including one in the middle of a call, and logs each step in that order.
func TestListenShutdownOrder(t *testing.T) {
	ctx := testContext(t)
	log, logBuf := newLogger(t, "server")
	shared := newSlow()
	path, cancel, listened := listen(t, slowFactory(shared), &protocol.Options{Logger: log})
	_, a := connectSlow(t, path, nil)
	_, b := connectSlow(t, path, nil)
	if _, err := slowEcho(ctx, b, "hi"); err != nil {
		t.Fatal(err)
	}
	f, release := a.Sleep(ctx, func(p testschema.Slow_sleep_Params) error {
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
	if nc, err := net.Dial("unix", path); err == nil {
		nc.Close()
		t.Errorf("dial after shutdown succeeded")
	}

	var order []string
	for _, l := range strings.Split(logBuf.String(), "\n") {
		switch {
		case strings.Contains(l, `msg="stopped accepting connections"`):
			order = append(order, "stopped accepting "+field(l, "open"))
		case strings.Contains(l, `msg="connection closed"`):
			order = append(order, "closed "+field(l, "reason"))
		case strings.Contains(l, `msg="ended incoming connections"`):
			order = append(order, "ended "+field(l, "count"))
		}
	}
	want := []string{`stopped accepting 2`, `closed "ctx ended"`, `closed "ctx ended"`, `ended 2`}
	if strings.Join(order, "; ") != strings.Join(want, "; ") {
		t.Errorf("shutdown steps logged:\n %q\nwant\n %q", order, want)
	}
}

// field returns the value of key in a text log line.
func field(line, key string) string {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	if strings.HasPrefix(rest, `"`) {
		if i := strings.Index(rest[1:], `"`); i >= 0 {
			return rest[:i+2]
		}
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}
