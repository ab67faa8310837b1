package process

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the child process: spawnHelper starts it with
// helperEnv naming one of helpers, and TestMain then runs that helper instead
// of the tests (the pattern of os/exec's exec_test.go).
const (
	helperEnv    = "MULTIPROCESS_PROCESS_TEST_HELPER"
	helperArgEnv = "MULTIPROCESS_PROCESS_TEST_HELPER_ARG"
)

// Each helper is run in a spawned child with its end of the socket, and
// returns the child's exit code.
var helpers = map[string]func(conn net.Conn) int{
	// echo copies the socket back to itself and exits 0 when it closes.
	"echo": func(conn net.Conn) int {
		if _, err := io.Copy(conn, conn); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			return 1
		}
		return 0
	},
	// args writes its argv, one argument a line, and exits 0.
	"args": func(conn net.Conn) int {
		for _, a := range os.Args {
			fmt.Fprintln(conn, strconv.Quote(a))
		}
		return 0
	},
	// fds writes "fd dev ino target" for every descriptor it has open, and exits 0.
	"fds": func(conn net.Conn) int {
		dir, err := os.Open("/proc/self/fd")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fds:", err)
			return 1
		}
		names, err := dir.Readdirnames(-1)
		dir.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "fds:", err)
			return 1
		}
		w := bufio.NewWriter(conn)
		for _, name := range names {
			fd, _ := strconv.Atoi(name)
			var st unix.Stat_t
			if unix.Fstat(fd, &st) != nil {
				continue // the directory's own descriptor, closed above
			}
			target, _ := os.Readlink("/proc/self/fd/" + name)
			fmt.Fprintf(w, "%d %d %d %s\n", fd, st.Dev, st.Ino, target)
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "fds:", err)
			return 1
		}
		return 0
	},
	// exit exits with the code in helperArgEnv, without touching the socket.
	"exit": func(net.Conn) int {
		code, err := strconv.Atoi(os.Getenv(helperArgEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, "exit:", err)
			return 1
		}
		return code
	},
	// sigkill kills itself with SIGKILL.
	"sigkill": func(net.Conn) int {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
		return 1
	},
	// hang says "ready", then ignores the socket closing and sleeps until
	// killed. (A bare select{} would trip Go's deadlock detector.)
	"hang": func(conn net.Conn) int {
		if _, err := io.WriteString(conn, "ready\n"); err != nil {
			return 1
		}
		for {
			time.Sleep(time.Hour)
		}
	},
}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	goleak.VerifyTestMain(m)
}

// runHelper is the spawned side exactly as a real program would be: it
// checks its arguments with CheckSpawned and takes its socket with
// SocketConn. Exit codes 90 and up are the helper's own failures.
func runHelper(name string) int {
	helper, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no helper %q\n", name)
		return 90
	}
	fd, spawned, err := CheckSpawned(os.Args)
	if err != nil || !spawned {
		fmt.Fprintf(os.Stderr, "helper %s: CheckSpawned(%q) = %d, %v, %v\n", name, os.Args, fd, spawned, err)
		return 91
	}
	conn, err := SocketConn(fd)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 92
	}
	defer conn.Close()
	return helper(conn)
}

// testDeadline only turns a hang into a failure; nothing here is timed.
const testDeadline = 30 * time.Second

// fdWait bounds how long a descriptor check waits for descriptors that
// close asynchronously (a reaped child's reaper, a connection closed by
// another goroutine), only to tell a leak from a delay.
const fdWait = 10 * time.Second

// spawnHelper spawns the test binary running the named helper, with arg in
// helperArgEnv, and registers a cleanup that closes the socket and stops the
// child. extra, if not nil, adjusts the Config first.
func spawnHelper(t *testing.T, name, arg string, extra func(*Config)) (*Child, net.Conn) {
	t.Helper()
	cfg := &Config{
		Path: os.Args[0],
		Env:  helperEnviron(name, arg),
	}
	if extra != nil {
		extra(cfg)
	}
	child, conn, err := Spawn("helper-"+name, cfg)
	if err != nil {
		t.Fatalf("Spawn helper %s: %v", name, err)
	}
	t.Cleanup(func() {
		conn.Close()
		child.Stop(testDeadline)
	})
	if err := conn.SetDeadline(time.Now().Add(testDeadline)); err != nil {
		t.Fatal(err)
	}
	return child, conn
}

// helperEnviron returns this process's environment plus what selects the
// helper. Under -race a child would otherwise sleep a second on exit
// (ThreadSanitizer's atexit_sleep_ms), unless GORACE says otherwise already.
func helperEnviron(name, arg string) []string {
	env := append(os.Environ(), helperEnv+"="+name, helperArgEnv+"="+arg)
	if _, ok := os.LookupEnv("GORACE"); !ok {
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// fileID is a descriptor's identity across processes.
type fileID struct{ dev, ino uint64 }

func fdID(t *testing.T, fd int) fileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return fileID{uint64(st.Dev), st.Ino}
}

// procState returns the state letter of /proc/PID/stat ("Z" for a zombie),
// or "" when there is no such process.
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || err == nil && len(b) == 0 {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		t.Fatalf("cannot parse %q", s)
	}
	return s[i+2 : i+3]
}
