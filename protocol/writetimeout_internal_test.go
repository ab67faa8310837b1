package protocol

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A reader that takes the bytes slowly but steadily is not dropped, even
// when one write takes many times the timeout.
func TestWriteTimeoutSparesSteadyReader(t *testing.T) {
	const timeout = 200 * time.Millisecond
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := newWriteTimeoutConn(a, timeout)
	go func() {
		buf := make([]byte, 1<<10)
		for {
			time.Sleep(timeout / 20)
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	n, err := w.Write(make([]byte, 50<<10))
	if err != nil || n != 50<<10 {
		t.Fatalf("Write = %d, %v after %s; want all 50 KiB", n, err, time.Since(start))
	}
	t.Logf("50 KiB written in %s with a timeout of %s", time.Since(start), timeout)
}

// A peer that reads nothing fails the write with ErrWriteTimeout; one that
// stops halfway too.
func TestWriteTimeoutDropsPeerThatStopsReading(t *testing.T) {
	for _, read := range []int{0, 4 << 10} {
		a, b := net.Pipe()
		w := newWriteTimeoutConn(a, 50*time.Millisecond)
		go func() { io.CopyN(io.Discard, b, int64(read)) }()
		n, err := w.Write(make([]byte, 8<<10))
		if !errors.Is(err, ErrWriteTimeout) || n != read {
			t.Errorf("peer reading %d bytes: Write = %d, %v; want %d, ErrWriteTimeout", read, n, err, read)
		}
		a.Close()
		b.Close()
	}
}

// The owner's write deadline (rpcconn bounds the sending of an Abort with
// one) is kept: a write blocked under a long timeout ends at the owner's
// earlier deadline, with the plain deadline error.
func TestWriteTimeoutKeepsOwnersDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := newWriteTimeoutConn(a, time.Hour)
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 1<<10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the write block, most of the time
	if err := w.SetWriteDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrWriteTimeout) {
			t.Errorf("Write = %v, want the deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still blocked 10 s after the owner's deadline")
	}
	// Later writes keep the owner's deadline too.
	if _, err := w.Write([]byte{1}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Write after the owner's deadline = %v, want the deadline error", err)
	}
}
