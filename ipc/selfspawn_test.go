package ipc_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/ipc/internal/testapp"
	"github.com/gomultiprocess/multiprocess/mp"
)

// A binary spawns itself in a role: by name, when it has no sibling
// executable of that name and plays that role (Options.SelfRoles), or
// explicitly (ChildSpec.Role). The child runs the role through RunRole,
// which clears EnvRole; its command line is exactly `<exe> -ipcfd 3`; the
// parent logs that it spawned itself.
func TestSpawnSelfInRole(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		spawn func(i *testIpc) (testapp.Init, error)
	}{
		{"SelfRoles", func(i *testIpc) (testapp.Init, error) { return i.SpawnProcess(testCtx(t), selfRole) }},
		{"ChildSpec.Role", func(i *testIpc) (testapp.Init, error) {
			return i.Spawn(testCtx(t), ipc.ChildSpec{Name: "worker", Role: selfRole})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testCtx(t)
			// No kind: the children inherit this process's environment,
			// with EnvRole on top; the directory has no executable.
			i := newTestIpc(t, "parent", "", &ipc.Options{SelfRoles: []string{selfRole}})
			init, err := c.spawn(i)
			if err != nil {
				t.Fatal(err)
			}
			defer mp.Release(init)
			info, err := i.Handshake(ctx, init)
			if err != nil || info.Executable != selfRole {
				t.Fatalf("Handshake = %+v, %v; want the child named %s", info, err, selfRole)
			}
			env, err := init.Getenv(ctx, ipc.EnvRole)
			if err != nil || env.Found {
				t.Errorf("%s in the child = %+v, %v; want it cleared", ipc.EnvRole, env, err)
			}
			pid := childPid(t, init)
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				t.Fatal(err)
			}
			if want := self + "\x00-ipcfd\x003\x00"; string(cmdline) != want {
				t.Errorf("child's command line %q, want %q", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), strings.ReplaceAll(want, "\x00", " "))
			}
			if !i.logs.has(`msg="spawned child process: this binary in another role"`, fmt.Sprintf("child_pid=%d", pid), "path="+self, "role="+selfRole) {
				t.Errorf("no log line for spawning itself in role %s:\n%s", selfRole, i.logs.String())
			}
		})
	}
}

// A sibling executable of the name wins over a role of the same name.
func TestSpawnPrefersSiblingToSelfRole(t *testing.T) {
	ctx := testCtx(t)
	i := newTestIpc(t, "parent", "echo", &ipc.Options{SelfRoles: []string{"child"}})
	init := spawn(t, i, "child")
	if info, err := i.Handshake(ctx, init); err != nil || info.Executable != "child" {
		t.Fatalf("Handshake = %+v, %v", info, err)
	}
	if i.logs.has("this binary in another role") || !i.logs.has(`msg="spawned child process"`, "path=") {
		t.Errorf("want the sibling executable spawned:\n%s", i.logs.String())
	}
}

// An executable of the child's name that is this very program (as when a
// binary named greeter spawns the child greeter) is never started
// without a role, which would run this program again and spawn again:
// the binary plays the role if it can (Options.SelfRoles), and otherwise
// Spawn says why it cannot.
func TestSpawnSkipsItself(t *testing.T) {
	name := exeBase()
	dir := childDir(t, name) // this binary, under its own name

	i := newTestIpc(t, "parent", "", &ipc.Options{ExecutableDir: dir, SelfRoles: []string{name}})
	init := spawn(t, i, name)
	if info, err := i.Handshake(testCtx(t), init); err != nil || info.Executable != name {
		t.Fatalf("Handshake = %+v, %v; want the child in role %s", info, err, name)
	}
	if !i.logs.has(`msg="spawned child process: this binary in another role"`, "role="+name) {
		t.Errorf("want this binary spawned in role %s:\n%s", name, i.logs.String())
	}

	bare := newTestIpc(t, "parent", "", &ipc.Options{ExecutableDir: dir})
	_, err := bare.SpawnProcess(testCtx(t), name)
	if err == nil || !strings.Contains(err.Error(), "is this program itself, and it does not play the role "+name) {
		t.Fatalf("SpawnProcess(%s) without the role: %v, want an error saying it is this program", name, err)
	}
}
