package ipc

import (
	"context"
	"fmt"
	"os"
	"strings"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

var pid = os.Getpid()

// SpawnProcess starts the executable exeName, found in Options.ExecutableDir
// (by default next to this process's own executable), as `exeName -ipcfd 3`
// with one end of a socketpair, and returns a proxy for the Init it serves.
//
// The child must answer within Options.StartTimeout and speak this
// executable's protocol version, or it is killed, reaped and reported in
// the error. Releasing the returned proxy (and every copy made with
// AddRef) stops the child: its socket is closed, it is given
// Options.ShutdownTimeout to exit, then killed, and always reaped; its exit
// status is logged. If the child dies first, the proxy's calls fail with
// an error for which protocol.IsDisconnected is true.
func (i *Ipc) SpawnProcess(ctx context.Context, exeName string) (schema.Init, error) {
	if i.isClosed() {
		return schema.Init{}, fmt.Errorf("ipc: spawn %s: %w", exeName, errClosed)
	}
	path, err := i.executablePath(exeName)
	if err != nil {
		return schema.Init{}, fmt.Errorf("ipc: spawn %s: %w", exeName, err)
	}
	proc, nc, err := process.Spawn(exeName, &process.Config{
		Path:   path,
		Env:    i.childEnv(),
		Stdout: i.opts.Stdout,
		Stderr: i.opts.Stderr,
	})
	if err != nil {
		return schema.Init{}, fmt.Errorf("ipc: spawn %s: %w", exeName, err)
	}
	log := i.ctx.Logger.With("child", exeName, "child_pid", proc.Pid())
	log.Info("spawned child process", "path", path)
	conn, boot, err := protocol.Connect(ctx, nc, i.protocolOptions())
	if err != nil {
		_ = nc.Close()
		status := proc.Stop(i.opts.ShutdownTimeout)
		return schema.Init{}, fmt.Errorf("ipc: spawn %s: connect: %w (child %s)", exeName, err, status)
	}
	p, err := i.newPeer(proc, conn, log)
	if err != nil {
		boot.Release()
		_ = conn.Close()
		proc.Stop(i.opts.ShutdownTimeout)
		return schema.Init{}, fmt.Errorf("ipc: spawn %s: %w", exeName, err)
	}
	init, err := i.adopt(ctx, p, boot)
	if err != nil {
		return schema.Init{}, fmt.Errorf("ipc: spawn %s (pid %d): %w", exeName, proc.Pid(), err)
	}
	return init, nil
}

// childEnv is the environment of spawned children: Options.Env (or this
// process's), with this process's logging settings on top.
func (i *Ipc) childEnv() []string {
	base := i.opts.Env
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+2)
	for _, kv := range base {
		if strings.HasPrefix(kv, EnvDebug+"=") {
			continue
		}
		env = append(env, kv)
	}
	if i.opts.DebugIPC {
		env = append(env, EnvDebug+"=ipc")
	}
	return env
}
