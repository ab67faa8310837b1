package protocol

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// socketPairT returns the two ends of a unix stream socketpair, closed at
// the test's end.
func socketPairT(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// The RPC connection pulls a goroutine out of Read with a read deadline in
// the past (a caller reading for its own Return whose context ended).
// timeoutConn passes that deadline's error up, even while a deadline of
// its own is armed (it stays armed after a message that spanned reads),
// and the message timeout works again once the owner clears it.
func TestTimeoutConnOwnerDeadline(t *testing.T) {
	a, b := socketPairT(t)
	const timeout = 300 * time.Millisecond
	tc := newTimeoutConn(a, timeout)

	// A message of one segment of one word, sent in two pieces: the
	// second read of it arms the message timeout, which stays armed.
	msg := []byte{0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	if _, err := b.Write(msg[:6]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := tc.Read(buf); err != nil || n != 6 {
		t.Fatalf("first piece: %d, %v", n, err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		b.Write(msg[6:])
	}()
	if n, err := tc.Read(buf); err != nil || n != len(msg)-6 {
		t.Fatalf("second piece: %d, %v", n, err)
	}
	if !tc.armed {
		t.Fatal("the message timeout is not armed after a message that spanned reads: the case to test is gone")
	}

	// At the boundary, blocked in Read: the owner's deadline ends it.
	done := make(chan error, 1)
	go func() {
		_, err := tc.Read(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := tc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read ended by the owner's deadline returned %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5 s after the owner set a read deadline in the past")
	}

	// Cleared: a message left incomplete fails with the message timeout,
	// a whole one passes.
	if err := tc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(msg); err != nil {
		t.Fatal(err)
	}
	if n, err := tc.Read(buf); err != nil || n != len(msg) {
		t.Fatalf("whole message after the owner's deadline: %d, %v", n, err)
	}
	if _, err := b.Write(msg[:10]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var err error
	for err == nil {
		_, err = tc.Read(buf)
	}
	if !errors.Is(err, ErrMessageTimeout) {
		t.Fatalf("incomplete message after the owner cleared its deadline: %v, want ErrMessageTimeout", err)
	}
	if d := time.Since(start); d > 10*timeout {
		t.Fatalf("message timeout of %v fired after %v", timeout, d)
	}
}
