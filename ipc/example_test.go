package ipc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// This example spawns a child process, asks its Init for an Echo and calls
// it. A real program spawns a sibling executable whose main starts with
//
//	if handled, status := i.StartSpawnedProcess(os.Args); handled {
//		os.Exit(status)
//	}
//
// Here the child is this test binary, whose TestMain does exactly that.
func Example() {
	dir, _ := os.MkdirTemp("", "ipcexample")
	defer os.RemoveAll(dir)
	self, _ := os.Executable()
	_ = os.Symlink(self, filepath.Join(dir, "echoer"))
	os.Setenv(envChild, "echo")
	defer os.Unsetenv(envChild)

	newInit := func(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
		return ctx.Serve(&ipc.BaseInit{Ctx: ctx, Conn: conn})
	}
	i := ipc.New("example", os.Args[0], newInit, &ipc.Options{ExecutableDir: dir})
	defer i.Close()

	ctx := context.Background()
	init, err := i.SpawnProcess(ctx, "echoer")
	if err != nil {
		fmt.Println("spawn:", err)
		return
	}
	defer init.Release() // stops the child

	made, release := init.MakeEcho(ctx, nil)
	defer release()
	fut, release2 := made.Result().Echo(ctx, func(p schema.Echo_echo_Params) error {
		return p.SetEcho("hello across the process boundary")
	})
	defer release2()
	res, err := fut.Struct()
	if err != nil {
		fmt.Println("echo:", err)
		return
	}
	reply, _ := res.Result()
	fmt.Println(reply)
	// Output: hello across the process boundary
}
