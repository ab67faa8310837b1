package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gomultiprocess/multiprocess/process"
)

// spawnChild starts the test binary as a child of the given kind, with
// process.Spawn as ipc.Spawn would, and registers a cleanup that stops it
// if the test has not.
func spawnChild(tb testing.TB, kind string) (*process.Child, net.Conn) {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	child, conn, err := spawnProcess(self, kind, append(os.Environ(), envChild+"="+kind))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		child.Stop(time.Second)
	})
	return child, conn
}

// spawnProcess starts path, the test binary, as a child of the given kind
// with the environment env (which names the kind).
func spawnProcess(path, kind string, env []string) (*process.Child, net.Conn, error) {
	return process.Spawn(kind, &process.Config{Path: path, Env: env})
}

// stopChild closes the child's socket, on which it should exit 0 by
// itself; it is killed if it has not within a few seconds.
func stopChild(child *process.Child, conn io.Closer) error {
	err := conn.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		err = nil
	}
	if status := child.Stop(5 * time.Second); !status.Success() {
		return fmt.Errorf("child %d: %s", child.Pid(), status)
	}
	return err
}
