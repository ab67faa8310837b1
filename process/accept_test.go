package process

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

// An accepted connection names the socket's final path as its local
// address (the kernel knows only the temporary one it was bound under),
// and still gives its peer's credentials.
func TestAcceptedConnLocalAddr(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	l := listen(t, path, nil)

	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		if got := c.LocalAddr().String(); got != path {
			t.Errorf("accepted LocalAddr() = %q, want %q", got, path)
		}
		cred, err := PeerCredentials(c)
		if err != nil {
			t.Errorf("PeerCredentials of an accepted connection: %v", err)
		} else if cred.PID != int32(os.Getpid()) {
			t.Errorf("peer pid %d, want ours (%d)", cred.PID, os.Getpid())
		}
		accepted <- nil
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("Accept: %v", err)
	}
}
