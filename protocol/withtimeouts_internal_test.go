package protocol

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// However the timeouts wrap a socket, the RPC connection still reaches
// its descriptor: without it every message would go through the writer
// goroutine, a goroutine handoff more per call.
func TestWithTimeoutsKeepsDescriptor(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "a")
	nc, err := net.FileConn(f)
	f.Close()
	syscall.Close(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, o := range []Options{
		{},
		{WriteTimeout: -1},
		{MessageTimeout: -1},
		{WriteTimeout: -1, MessageTimeout: -1},
		{WriteTimeout: time.Second, MessageTimeout: time.Second},
	} {
		wrapped := withTimeouts(nc, &o)
		sc, ok := wrapped.(syscall.Conn)
		if !ok {
			t.Errorf("WriteTimeout %v, MessageTimeout %v: %T is not a syscall.Conn", o.WriteTimeout, o.MessageTimeout, wrapped)
			continue
		}
		if _, err := sc.SyscallConn(); err != nil {
			t.Errorf("WriteTimeout %v, MessageTimeout %v: SyscallConn: %v", o.WriteTimeout, o.MessageTimeout, err)
		}
	}
}
