package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func TestSpawnEcho(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "echo", "", nil)
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Errorf("conn is %T, want *net.UnixConn", conn)
	}
	msg := []byte("hello over the socketpair")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Errorf("echo = %q, want %q", got, msg)
	}
	// The helper exits when it reads EOF, as a real child does when its
	// socket closes.
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Errorf("after CloseWrite read %q, %v; want EOF", rest, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	st, err := child.Wait(ctx)
	if err != nil || !st.Success() {
		t.Errorf("Wait = %v, %v; want exit status 0", st, err)
	}
}

func TestSpawnArgs(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "args", "", nil)
	var got []string
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		a, err := strconv.Unquote(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{os.Args[0], "-ipcfd", "3"}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("child argv = %q, want %q", got, want)
	}
	if a := child.Args(); strings.Join(a, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("Args() = %q, want %q", a, want)
	}
	if child.Path() != os.Args[0] {
		t.Errorf("Path() = %q, want %q", child.Path(), os.Args[0])
	}
	if child.Pid() <= 0 {
		t.Errorf("Pid() = %d", child.Pid())
	}
}

// TestSpawnOnlySocketInherited checks, by file identity, what the child has
// open: a descriptor this process holds without close-on-exec (as if
// inherited from our own parent) must not reach it, nor must the parent's end
// of the socket, while the Stdout and Stderr files must (which also shows the
// comparison can see a match).
func TestSpawnOnlySocketInherited(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	leak, err := unix.Dup(int(r.Fd())) // dup(2) leaves FD_CLOEXEC clear
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	if flags, err := unix.FcntlInt(uintptr(leak), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("F_GETFD on the dup = %#x, %v; want close-on-exec clear", flags, err)
	}
	leakID := fdID(t, leak)

	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	defer outW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer errR.Close()
	defer errW.Close()

	_, conn := spawnHelper(t, "fds", "", func(c *Config) {
		c.Stdout, c.Stderr = outW, errW
	})
	if flags, err := unix.FcntlInt(uintptr(leak), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("F_GETFD on the dup after Spawn = %#x, %v; want close-on-exec set", flags, err)
	}

	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var parentID fileID
	if err := raw.Control(func(fd uintptr) { parentID = fdID(t, int(fd)) }); err != nil {
		t.Fatal(err)
	}

	childFDs := map[fileID][]int{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var fd int
		var id fileID
		t.Logf("child: %s", sc.Text())
		f := strings.Fields(sc.Text())
		if len(f) != 4 {
			t.Fatalf("bad line %q", sc.Text())
		}
		fd, _ = strconv.Atoi(f[0])
		id.dev, _ = strconv.ParseUint(f[1], 10, 64)
		id.ino, _ = strconv.ParseUint(f[2], 10, 64)
		childFDs[id] = append(childFDs[id], fd)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	if fds, ok := childFDs[leakID]; ok {
		t.Errorf("inherited descriptor %d reached the child as %v", leak, fds)
	}
	if fds, ok := childFDs[parentID]; ok {
		t.Errorf("parent's end of the socket reached the child as %v", fds)
	}
	if fds := childFDs[fdID(t, int(outW.Fd()))]; len(fds) != 1 || fds[0] != 1 {
		t.Errorf("Config.Stdout is the child's %v, want [1]", fds)
	}
	if fds := childFDs[fdID(t, int(errW.Fd()))]; len(fds) != 1 || fds[0] != 2 {
		t.Errorf("Config.Stderr is the child's %v, want [2]", fds)
	}
}

// TestSpawnParentKeepsNoChildEnd: when the child exits, the parent reads EOF,
// which it would not if it still held a copy of the child's end.
func TestSpawnParentKeepsNoChildEnd(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	_, conn := spawnHelper(t, "exit", "0", nil)
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read = %d, %v; want 0, EOF", n, err)
	}
}

func TestSpawnLeaksNoDescriptor(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	spawnAndStop := func() {
		t.Helper()
		child, conn, err := Spawn("helper-echo", &Config{
			Path: os.Args[0],
			Env:  helperEnviron("echo", ""),
		})
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if st := child.Stop(testDeadline); !st.Success() {
			t.Errorf("Stop = %v, want exit status 0", st)
		}
	}
	// The first spawn may set up the runtime's network poller, whose
	// descriptors stay open for good: count from after it.
	spawnAndStop()
	before := fdcheck.Count(t)
	for range 3 {
		spawnAndStop()
	}
	if after := fdcheck.Count(t); after != before {
		t.Errorf("open descriptors: %d before, %d after", before, after)
	}
}

func TestSpawnBadExecutable(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Executable but no program: only execve itself finds out, after the
	// socketpair exists.
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("\x00\x01 not a program"), 0o755); err != nil {
		t.Fatal(err)
	}
	warmUpPoller(t)
	for _, tc := range []struct {
		name, path string
		is         error
	}{
		{"missing", filepath.Join(dir, "missing"), fs.ErrNotExist},
		{"not executable", plain, fs.ErrPermission},
		{"directory", dir, nil},
		{"not a program", garbage, syscall.ENOEXEC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fdcheck.Count(t)
			child, conn, err := Spawn("wallet", &Config{Path: tc.path})
			if err == nil {
				conn.Close()
				child.Stop(0)
				t.Fatalf("Spawn(%s) succeeded", tc.path)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) {
				t.Errorf("error %q does not wrap an *fs.PathError", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if after := fdcheck.Count(t); after != before {
				t.Errorf("open descriptors: %d before, %d after", before, after)
			}
		})
	}
}

// warmUpPoller makes the runtime set up its network poller, whose
// descriptors then stay open for good, so that descriptor counts taken
// afterwards do not see them appear.
func warmUpPoller(t *testing.T) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	conn, err := SocketConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestSpawnDefaultPath(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err = filepath.EvalSymlinks(self)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(filepath.Dir(self), "no-such-wallet")
	got, err := ExecutablePath("no-such-wallet")
	if err != nil || got != want {
		t.Fatalf("ExecutablePath = %q, %v; want %q", got, err, want)
	}
	_, _, err = Spawn("no-such-wallet", nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), want) {
		t.Errorf("Spawn(no-such-wallet, nil) = %v; want ErrNotExist naming %s", err, want)
	}
	for _, bad := range []string{"", ".", "..", "bin/wallet", "/bin/true"} {
		if p, err := ExecutablePath(bad); err == nil {
			t.Errorf("ExecutablePath(%q) = %q, want an error", bad, p)
		}
	}
}

func TestWaitExitStatus(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, _ := spawnHelper(t, "exit", "3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	st, err := child.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 3 || st.Signal != 0 || st.Success() || st.String() != "exit status 3" {
		t.Errorf("Wait = %+v (%v), want exit status 3", st, st)
	}
	select {
	case <-child.Done():
	default:
		t.Error("Done not closed after Wait returned")
	}
}

func TestWaitKilledBySignal(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, _ := spawnHelper(t, "sigkill", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	st, err := child.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != -1 || st.Signal != syscall.SIGKILL || st.String() != "killed by signal 9 (killed)" {
		t.Errorf("Wait = %+v (%v), want killed by signal 9", st, st)
	}
}

// TestWaitContextAndConcurrency: Wait gives up with ctx, leaving the child
// alone, and once the child is reaped every Wait from every goroutine sees
// the same status.
func TestWaitContextAndConcurrency(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "echo", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if st, err := child.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || st.Success() {
		t.Fatalf("Wait on a live child = %v, %v; want DeadlineExceeded", st, err)
	}
	// Still alive, still answering.
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	const waiters = 8
	type result struct {
		st  ExitStatus
		err error
	}
	results := make(chan result, waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			st, err := child.Wait(ctx)
			results <- result{st, err}
		})
	}
	conn.Close()
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil || !r.st.Success() {
			t.Errorf("Wait = %v, %v; want exit status 0", r.st, r.err)
		}
	}
	if err := child.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after reaping = %v, want os.ErrProcessDone", err)
	}
	if err := child.Kill(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Kill after reaping = %v, want os.ErrProcessDone", err)
	}
	if st := child.Stop(0); !st.Success() {
		t.Errorf("Stop after reaping = %v, want exit status 0", st)
	}
}

func TestSignal(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, _ := spawnHelper(t, "hang", "", nil)
	if err := child.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	st, err := child.Wait(ctx)
	if err != nil || st.Signal != syscall.SIGTERM {
		t.Errorf("Wait after SIGTERM = %v, %v; want killed by signal 15", st, err)
	}
}

// checkReaped fails unless pid is gone or, if the number was reused already,
// at least not a zombie.
func checkReaped(t *testing.T, pid int) {
	t.Helper()
	if s := procState(t, pid); s == "Z" {
		t.Errorf("pid %d is a zombie after Stop", pid)
	}
}

func TestStopKillsChildThatIgnoresSocket(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "hang", "", nil)
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	st := child.Stop(100 * time.Millisecond)
	if st.Signal != syscall.SIGKILL {
		t.Errorf("Stop = %v, want killed by signal 9", st)
	}
	checkReaped(t, child.Pid())
}

func TestStopKillsStoppedChild(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "echo", "", nil)
	// Make sure it runs its helper before freezing it.
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := child.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	st := child.Stop(100 * time.Millisecond)
	if st.Signal != syscall.SIGKILL {
		t.Errorf("Stop = %v, want killed by signal 9", st)
	}
	checkReaped(t, child.Pid())
}

func TestStopCleanExit(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	child, conn := spawnHelper(t, "echo", "", nil)
	conn.Close()
	if st := child.Stop(testDeadline); !st.Success() || st.String() != "exit status 0" {
		t.Errorf("Stop = %+v (%v), want exit status 0", st, st)
	}
	checkReaped(t, child.Pid())
}

func TestExitStatusString(t *testing.T) {
	for _, tc := range []struct {
		st   ExitStatus
		want string
		ok   bool
	}{
		{ExitStatus{}, "exit status 0", true},
		{ExitStatus{Code: 3}, "exit status 3", false},
		{ExitStatus{Code: -1, Signal: syscall.SIGKILL}, "killed by signal 9 (killed)", false},
		{ExitStatus{Code: -1, Signal: syscall.SIGTERM}, "killed by signal 15 (terminated)", false},
	} {
		if got := tc.st.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.st, got, tc.want)
		}
		if got := tc.st.Success(); got != tc.ok {
			t.Errorf("%+v.Success() = %v, want %v", tc.st, got, tc.ok)
		}
	}
}
