package ipc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/syncbuf"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// envChild selects how the test binary behaves when a test spawns it as a
// child (see childKinds); the tests set it in Options.Env, never in their
// own environment.
const envChild = "IPC_TEST_CHILD"

// The application the tests' processes belong to, and its version.
const (
	testApp     = "ipctest"
	testVersion = 1
)

// selfRole is the role the test binary plays when a test spawns it as
// itself (Options.SelfRoles, ChildSpec.Role).
const selfRole = "selfchild"

// childKinds are the children the test binary can be, by envChild.
var childKinds = map[string]func() int{
	// The usual child: serves testapp's Init with package ipc.
	"echo": func() int { return serveChild("child", testApp, testVersion) },
	// The same, its Init taking one call at a time.
	"serial": func() int { return serveChildWith("child", testApp, testVersion, true) },
	// A child of another version of the same application.
	"otherversion": func() int { return serveChild("child", testApp, testVersion+1) },
	// A child of another application, whatever its version.
	"otherapp": func() int { return serveChild("child", "otherapp", testVersion+6) },
	// Holds its socket but never answers: a child that hangs at start-up.
	"silent": func() int {
		time.Sleep(time.Hour)
		return 0
	},
	// Serves testapp's Init bare, with package protocol and no ipc: a
	// peer without a control channel, as a C++ or Python program is.
	"bare": serveBare,
}

func TestMain(m *testing.M) {
	// The role first, as the main of a binary that spawns itself does.
	ipc.RunRole(map[string]func() int{
		selfRole: func() int { return serveChild(selfRole, testApp, testVersion) },
		// The role named as this binary (see TestSpawnSkipsItself).
		exeBase(): func() int { return serveChild(exeBase(), testApp, testVersion) },
	})
	if kind, ok := os.LookupEnv(envChild); ok {
		run, ok := childKinds[kind]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, kind)
			os.Exit(2)
		}
		os.Exit(run())
	}
	goleak.VerifyTestMain(m)
}

// childLogger is the log of a child: its standard error, which it shares
// with the test binary that spawned it.
func childLogger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("process", name, "pid", os.Getpid())
}

// serveChild is the main of a spawned child that serves testapp's Init.
func serveChild(name, app string, version uint32) int {
	return serveChildWith(name, app, version, false)
}

// serveChildWith is serveChild, with an Init that takes one call at a
// time if serial.
func serveChildWith(name, app string, version uint32, serial bool) int {
	log := childLogger(name)
	i := ipc.New(name, os.Args[0], testapp.InitInterface, func(*ipc.Context, *protocol.Conn) testapp.Init {
		return &testapp.Server{Log: log, ExitFunc: os.Exit, Serial: serial}
	}, &ipc.Options{Logger: log, Application: app, ApplicationVersion: version})
	if handled, status := i.StartSpawnedProcess(os.Args); handled {
		return status
	}
	log.Error("child started without -ipcfd")
	return 2
}

// serveBare is the main of a spawned child without package ipc: it
// serves testapp's Init on its socket until the parent closes it.
func serveBare() int {
	log := childLogger("bare")
	fd, spawned, err := process.CheckSpawned(os.Args)
	if err != nil || !spawned {
		log.Error("not spawned", "err", err)
		return 2
	}
	nc, err := process.SocketConn(fd)
	if err != nil {
		log.Error("no socket", "err", err)
		return 1
	}
	err = protocol.Serve(context.Background(), nc, func(*protocol.Conn) capnp.Client {
		return testapp.InitInterface.Capnp(&testapp.Server{Log: log, ExitFunc: os.Exit})
	}, &protocol.Options{Logger: log})
	if err != nil {
		log.Error("serving failed", "err", err)
		return 1
	}
	return 0
}

// deadline turns a hang into a failure; no test should come near it.
const deadline = 30 * time.Second

// testIpc is an Ipc of the tests' application, and its log.
type testIpc struct {
	*ipc.Ipc[testapp.Init]
	logs *logBuf
}

// logBuf collects an Ipc's log lines for assertions.
type logBuf struct{ syncbuf.Buffer }

func (l *logBuf) has(parts ...string) bool { return l.count(parts...) > 0 }

// count returns how many lines contain every one of parts.
func (l *logBuf) count(parts ...string) int { return len(l.Lines(parts...)) }

// wait waits until a line contains every one of parts.
func (l *logBuf) wait(t *testing.T, parts ...string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !l.has(parts...) {
		if time.Now().After(end) {
			t.Fatalf("no log line with %q in:\n%s", parts, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newTestIpc returns the Ipc of an executable called name that serves
// testapp.Server, closed at the end of the test, whose spawned children
// are the test binary as kind (an empty kind: children find no
// executable, and play their role, if any, through RunRole). Options not set in opts get the tests' defaults: the
// tests' application and version, a ShutdownTimeout of 5 s, and a log at
// Debug collected for assertions (and in t.Log if verbose). It checks
// that the test leaves no descriptor open.
func newTestIpc(t *testing.T, name, kind string, opts *ipc.Options) *testIpc {
	t.Helper()
	fdcheck.Check(t, deadline)
	var o ipc.Options
	if opts != nil {
		o = *opts
	}
	logs := &logBuf{}
	if o.Logger == nil {
		var w io.Writer = logs
		if testing.Verbose() {
			w = io.MultiWriter(logs, testWriter{t})
		}
		o.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("process", name)
	}
	if o.Application == "" {
		o.Application, o.ApplicationVersion = testApp, testVersion
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
	if o.Env == nil {
		o.Env = testChildEnv(kind)
	}
	if o.ExecutableDir == "" {
		if kind != "" {
			o.ExecutableDir = childDir(t, "child")
		} else {
			o.ExecutableDir = t.TempDir()
		}
	}
	i := ipc.New(name, "", testapp.InitInterface, func(*ipc.Context, *protocol.Conn) testapp.Init {
		return &testapp.Server{Log: o.Logger}
	}, &o)
	t.Cleanup(func() { _ = i.Close() })
	return &testIpc{Ipc: i, logs: logs}
}

// testChildEnv is the environment of the test binary spawned as a child
// of kind: this process's, with envChild set to kind unless kind is
// empty. Under the race detector, the child does not sleep a second
// before it exits (GORACE's atexit_sleep_ms), so that a graceful stop
// does not take that long; a race it finds still makes it exit 66.
func testChildEnv(kind string) []string {
	env := append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if kind != "" {
		env = append(env, envChild+"="+kind)
	}
	return env
}

// childDir returns a directory in which name is the test binary, for
// Options.ExecutableDir.
// exeBase is the base name of this test binary's executable.
func exeBase() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Base(self)
}

func childDir(t testing.TB, name string) string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return dir
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// shortDir returns a new directory with a path short enough for sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// onExit returns the channel on which OnExit reports the child's exit.
func onExit(t *testing.T, i *testIpc, init testapp.Init) <-chan ipc.ChildExit {
	t.Helper()
	ch := make(chan ipc.ChildExit, 1)
	if err := i.OnExit(init, func(e ipc.ChildExit) { ch <- e }); err != nil {
		t.Fatal(err)
	}
	return ch
}

// waitExit waits for the exit OnExit reports.
func waitExit(t *testing.T, ch <-chan ipc.ChildExit) ipc.ChildExit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(deadline):
		t.Fatal("no exit reported")
		return ipc.ChildExit{}
	}
}

// spawn spawns the child and releases its Init at the end of the test.
func spawn(t *testing.T, i *testIpc, name string) testapp.Init {
	t.Helper()
	init, err := i.SpawnProcess(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mp.Release(init) })
	return init
}
