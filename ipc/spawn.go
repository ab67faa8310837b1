package ipc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
)

var pid = os.Getpid()

// A ChildSpec says which program to start as a child process.
type ChildSpec struct {
	// Name names the child in logs and errors ("wallet"); it is the
	// executable looked for when Path is empty.
	Name string
	// Path is the executable to run. Empty means: Name next to this
	// process's executable (or in Options.ExecutableDir), unless that is
	// this very program, else this binary in role Name if Name is one of
	// Options.SelfRoles.
	Path string
	// Role, if set, starts the executable in that role (EnvRole carries
	// it; the child's main dispatches with RunRole). With an empty Path,
	// the executable is this binary.
	Role string
}

// SpawnProcess starts the child name: the executable name next to this
// process's own (or in Options.ExecutableDir), or, when there is none and
// name is one of Options.SelfRoles, this binary in role name. It logs
// which. See Spawn.
func (i *Ipc[I]) SpawnProcess(ctx context.Context, name string) (I, error) {
	return i.Spawn(ctx, ChildSpec{Name: name})
}

// Spawn starts the child spec describes as `<executable> -ipcfd 3` with
// one end of a socketpair, and returns its Init, whose calls run in the
// child. It does not wait for the child: the handshake (hello, and a
// subscription to the child's lifetime events) travels with the first
// calls made on the Init. A child that does not answer it within
// Options.StartTimeout, or speaks another version of the application, is
// killed and reaped; calls on its Init then fail with an error that says
// why (and matches ErrVersionMismatch in that case, and
// mp.ErrDisconnected); Handshake waits for the outcome.
//
// Releasing the Init (mp.Release; every copy taken with mp.Retain too)
// stops the child: it is asked to stop, given Options.ShutdownTimeout to
// exit, then killed, and always reaped. OnExit tells how it ended.
func (i *Ipc[I]) Spawn(ctx context.Context, spec ChildSpec) (I, error) {
	var zero I
	_, boot, err := i.spawnPeer(ctx, spec)
	if err != nil {
		return zero, err
	}
	return i.init.FromCapnp(boot), nil
}

// spawnPeer starts the child, connects to it and starts its peer; boot
// is the proxy of its bootstrap capability, whose release stops it.
func (c *core) spawnPeer(ctx context.Context, spec ChildSpec) (*peer, capnp.Client, error) {
	name := spec.Name
	if name == "" {
		name = spec.Role
	}
	if c.isClosed() {
		return nil, capnp.Client{}, fmt.Errorf("ipc: spawn %s: %w", name, errClosed)
	}
	path, role, err := c.findChild(spec)
	if err != nil {
		return nil, capnp.Client{}, fmt.Errorf("ipc: spawn %s: %w", name, err)
	}
	proc, nc, err := process.Spawn(name, &process.Config{
		Path:   path,
		Env:    c.childEnv(role),
		Stdout: c.opts.Stdout,
		Stderr: c.opts.Stderr,
	})
	if err != nil {
		return nil, capnp.Client{}, fmt.Errorf("ipc: spawn %s: %w", name, err)
	}
	log := c.ctx.Logger.With("child", name, "child_pid", proc.Pid())
	if role != "" {
		log.Info("spawned child process: this binary in another role", "path", path, "role", role)
	} else {
		log.Info("spawned child process", "path", path)
	}
	conn, boot, err := protocol.Connect(ctx, nc, c.childConnOptions())
	if err != nil {
		_ = nc.Close()
		status := proc.Stop(c.opts.ShutdownTimeout)
		return nil, capnp.Client{}, fmt.Errorf("ipc: spawn %s: connect: %w (child %s)", name, err, status)
	}
	p, err := c.newPeer(name, proc, conn, boot, log)
	if err != nil {
		boot.Release()
		_ = conn.Close()
		proc.Stop(c.opts.ShutdownTimeout)
		return nil, capnp.Client{}, fmt.Errorf("ipc: spawn %s: %w", name, err)
	}
	return p, boot, nil
}

// findChild returns the executable to start for spec, and the role to
// start it in.
func (c *core) findChild(spec ChildSpec) (path, role string, err error) {
	if spec.Path != "" {
		return spec.Path, spec.Role, nil
	}
	if spec.Role != "" {
		self, err := os.Executable()
		if err != nil {
			return "", "", fmt.Errorf("find own executable: %w", err)
		}
		return self, spec.Role, nil
	}
	name := spec.Name
	if name == "" || strings.ContainsRune(name, filepath.Separator) {
		return "", "", fmt.Errorf("child name %q is not a file name", name)
	}
	var (
		tried []string
		found string // this program itself, under the child's name
	)
	// candidate reports whether p is the child's executable. This very
	// program under the same name is not: started without a role, it
	// would run this program again, which would spawn again.
	candidate := func(p string) bool {
		if !isFile(p) {
			tried = append(tried, p)
			return false
		}
		if isSelf(p) {
			found = p
			return false
		}
		return true
	}
	if c.opts.ExecutableDir != "" {
		if p := filepath.Join(c.opts.ExecutableDir, name); candidate(p) {
			return p, "", nil
		}
	} else {
		if p, err := process.ExecutablePath(name); err == nil && candidate(p) {
			return p, "", nil
		}
		if c.argv0 != "" {
			if p := filepath.Join(filepath.Dir(c.argv0), name); !slices.Contains(tried, p) && p != found && candidate(p) {
				return p, "", nil
			}
		}
	}
	if slices.Contains(c.opts.SelfRoles, name) {
		self, err := os.Executable()
		if err != nil {
			return "", "", fmt.Errorf("find own executable: %w", err)
		}
		return self, name, nil
	}
	if found != "" {
		return "", "", fmt.Errorf("%s is this program itself, and it does not play the role %s (Options.SelfRoles): started again it would spawn again", found, name)
	}
	return "", "", fmt.Errorf("no executable %s (looked for %s), and this binary does not play that role", name, strings.Join(tried, ", "))
}

// isSelf reports whether path is this process's executable under the
// same name.
func isSelf(path string) bool {
	self, err := os.Executable()
	if err != nil || filepath.Base(self) != filepath.Base(path) {
		return false
	}
	a, err1 := os.Stat(self)
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// childEnv is the environment of spawned children: Options.Env (or this
// process's), with this process's logging settings and the child's role
// on top.
func (c *core) childEnv(role string) []string {
	base := c.opts.Env
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+2)
	for _, kv := range base {
		if strings.HasPrefix(kv, EnvDebug+"=") || strings.HasPrefix(kv, EnvRole+"=") {
			continue
		}
		env = append(env, kv)
	}
	if c.opts.DebugIPC {
		env = append(env, EnvDebug+"=ipc")
	}
	if role != "" {
		env = append(env, EnvRole+"="+role)
	}
	return env
}

// RunRole is the first statement of main in a binary that spawns itself in
// other roles (Options.SelfRoles, ChildSpec.Role). When this process was
// started in a role (EnvRole names it), RunRole clears EnvRole, so that the
// role's own children do not inherit it, runs the role's function and
// exits with the status it returns; otherwise it returns at once and main
// carries on. A role it does not know is an error: it says so and exits
// with status 2.
func RunRole(roles map[string]func() int) {
	role, ok := os.LookupEnv(EnvRole)
	if !ok {
		return
	}
	os.Unsetenv(EnvRole)
	fn, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: started in role %q (%s), which this binary does not play\n", filepath.Base(os.Args[0]), role, EnvRole)
		os.Exit(2)
	}
	os.Exit(fn())
}
