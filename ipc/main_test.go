package ipc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// envChild selects how the test binary behaves when it is spawned as a
// child by a test: "echo" serves the usual Init, "oldversion" an Init that
// claims another protocol version.
const envChild = "IPC_TEST_CHILD"

func TestMain(m *testing.M) {
	// A spawned test binary serves its Init instead of running tests.
	if kind := os.Getenv(envChild); kind == "silent" {
		// Holds its socket but never answers: a child that hangs at
		// start-up.
		time.Sleep(time.Hour)
		os.Exit(0)
	} else if kind != "" {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("process", "child-"+kind, "pid", os.Getpid())
		i := ipc.New("child", os.Args[0], childInits[kind], &ipc.Options{Logger: log})
		if handled, status := i.StartSpawnedProcess(os.Args); handled {
			os.Exit(status)
		}
		fmt.Fprintln(os.Stderr, "child started without -ipcfd")
		os.Exit(2)
	}
	goleak.VerifyTestMain(m)
}

var childInits = map[string]ipc.InitFactory{
	"echo": func(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
		return ctx.Serve(&ipc.BaseInit{Ctx: ctx, Conn: conn})
	},
	"oldversion": func(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
		return ctx.Serve(&oldVersionInit{ipc.BaseInit{Ctx: ctx, Conn: conn}})
	},
}

// oldVersionInit answers hello as an executable of another protocol
// version would.
type oldVersionInit struct{ ipc.BaseInit }

func (oldVersionInit) Hello(_ context.Context, call schema.Init_hello) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewCallee()
	if err != nil {
		return err
	}
	w.SetProtocolVersion(schema.ProtocolVersion + 1)
	w.SetPid(int32(os.Getpid()))
	if err := w.SetExecutable("child"); err != nil {
		return err
	}
	return w.SetBuild("v0.0.0-old")
}

// childDir returns a directory in which name is the test binary, for
// Options.ExecutableDir, and sets the child kind for spawned children.
func childDir(t testing.TB, name, kind string) string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, dir+"/"+name); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envChild, kind)
	return dir
}
