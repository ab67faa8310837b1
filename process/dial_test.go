package process

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func TestDialNoListener(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	tests := []struct {
		what, path string
		errno      syscall.Errno
	}{
		{"missing file", filepath.Join(dir, "missing.sock"), syscall.ENOENT},
		{"missing directory", filepath.Join(dir, "no", "node.sock"), syscall.ENOENT},
		{"stale socket", stale, syscall.ECONNREFUSED},
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	for _, tt := range tests {
		c, err := Dial(ctx, tt.path)
		if err == nil {
			c.Close()
			t.Errorf("Dial to a %s succeeded", tt.what)
			continue
		}
		if !errors.Is(err, ErrNoListener) || !errors.Is(err, tt.errno) {
			t.Errorf("Dial to a %s: %v; want %v wrapping %v", tt.what, err, ErrNoListener, tt.errno)
		}
		if want := "process: nothing is listening at unix:" + tt.path; err.Error() != want {
			t.Errorf("Dial to a %s: error %q, want %q", tt.what, err, want)
		}
	}
}

func TestDialErrors(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := shortDir(t)
	path := filepath.Join(dir, "node.sock")
	serveEcho(t, listen(t, path, nil))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := Dial(ctx, path); !errors.Is(err, context.Canceled) {
		if err == nil {
			c.Close()
		}
		t.Errorf("Dial with a cancelled context: %v, want %v", err, context.Canceled)
	}

	tooLong := "/" + strings.Repeat("x", MaxPathLen)
	if c, err := Dial(context.Background(), tooLong); !errors.Is(err, ErrPathTooLong) {
		if err == nil {
			c.Close()
		}
		t.Errorf("Dial to a %d-byte path: %v, want %v", len(tooLong), err, ErrPathTooLong)
	}
}

// TestDialFullBacklog: a listener whose backlog is full is alive. Dial waits
// for room until its context ends, and Listen refuses the path.
func TestDialFullBacklog(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// Backlog 0: Linux queues one connection, and refuses more with EAGAIN
	// until it is accepted.
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	first, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("first Dial: %v", err)
	}
	defer first.Close()

	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if c, err := Dial(short, path); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoListener) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("Dial with a full backlog: %v, want %v", err, context.DeadlineExceeded)
	}

	if l, err := Listen(path, nil); !errors.Is(err, ErrAddressInUse) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Listen on a socket with a full backlog: %v, want %v", err, ErrAddressInUse)
	}

	type result struct {
		c   net.Conn
		err error
	}
	second := make(chan result, 1)
	go func() {
		c, err := Dial(ctx, path)
		second <- result{c, err}
	}()
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	unix.Close(nfd)
	r := <-second
	if r.err != nil {
		t.Fatalf("Dial once the backlog has room: %v", r.err)
	}
	r.c.Close()
}
