package ipc

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/process"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// PeerInfo is what an executable tells its peers about itself through
// Init.hello.
type PeerInfo struct {
	ProtocolVersion uint32
	Build           string // module version and VCS revision
	Executable      string
	PID             int
}

func (p PeerInfo) String() string {
	return fmt.Sprintf("%s (pid %d, protocol %d, build %s)", p.Executable, p.PID, p.ProtocolVersion, p.Build)
}

func (p PeerInfo) write(w schema.PeerInfo) error {
	w.SetProtocolVersion(p.ProtocolVersion)
	w.SetPid(int32(p.PID))
	if err := w.SetBuild(p.Build); err != nil {
		return err
	}
	return w.SetExecutable(p.Executable)
}

func readPeerInfo(r schema.PeerInfo) (PeerInfo, error) {
	build, err := r.Build()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("read build: %w", err)
	}
	exe, err := r.Executable()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("read executable: %w", err)
	}
	return PeerInfo{
		ProtocolVersion: r.ProtocolVersion(),
		Build:           build,
		Executable:      exe,
		PID:             int(r.Pid()),
	}, nil
}

// checkVersions returns an error naming both sides when they speak
// different protocol versions.
func checkVersions(local, remote PeerInfo) error {
	if local.ProtocolVersion == remote.ProtocolVersion {
		return nil
	}
	return fmt.Errorf("%w: %s and %s", ErrVersionMismatch, local, remote)
}

// buildString describes this executable's build from its embedded build
// information: the main module's version and VCS revision.
var buildString = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	s := bi.Main.Version
	if s == "" {
		s = "(devel)"
	}
	var rev, dirty string
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if kv.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		s += " " + rev + dirty
	}
	return s
})

// LocalInfo is what this executable tells its peers about itself.
func (c *Context) LocalInfo() PeerInfo {
	return PeerInfo{
		ProtocolVersion: schema.ProtocolVersion,
		Build:           buildString(),
		Executable:      c.ExeName,
		PID:             pid,
	}
}

// hello introduces this executable to the peer behind init and checks that
// the two belong together.
func (i *Ipc) hello(ctx context.Context, init schema.Init) (PeerInfo, error) {
	local := i.ctx.LocalInfo()
	fut, release := init.Hello(ctx, func(p schema.Init_hello_Params) error {
		w, err := p.NewCaller()
		if err != nil {
			return err
		}
		return local.write(w)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: %w", err)
	}
	r, err := res.Callee()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: read reply: %w", err)
	}
	remote, err := readPeerInfo(r)
	if err != nil {
		return PeerInfo{}, fmt.Errorf("hello: %w", err)
	}
	if err := checkVersions(local, remote); err != nil {
		return remote, err
	}
	return remote, nil
}

// peer is one outgoing connection: to a spawned child (proc set) or to a
// listening process. Its run goroutine, owned by the Ipc, ends the
// connection and stops the child when the proxy is released, the
// connection is lost or the child dies, whichever comes first.
type peer struct {
	ipc      *Ipc
	name     string
	proc     *process.Child // nil for a connection to a listener
	conn     *protocol.Conn
	log      *slog.Logger
	stopOnce sync.Once
	stopReq  chan struct{}
	done     chan struct{}
}

func (i *Ipc) newPeer(name string, proc *process.Child, conn *protocol.Conn, log *slog.Logger) (*peer, error) {
	p := &peer{
		ipc:     i,
		name:    name,
		proc:    proc,
		conn:    conn,
		log:     log,
		stopReq: make(chan struct{}),
		done:    make(chan struct{}),
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, errClosed
	}
	i.peers[p] = struct{}{}
	i.tasks.Add(1)
	go func() {
		defer i.tasks.Done()
		p.run()
	}()
	return p, nil
}

func (p *peer) requestStop() { p.stopOnce.Do(func() { close(p.stopReq) }) }

// stop requests the stop and waits until it is complete.
func (p *peer) stop() {
	p.requestStop()
	<-p.done
}

func (p *peer) run() {
	defer close(p.done)
	var procDone <-chan struct{}
	if p.proc != nil {
		procDone = p.proc.Done()
	}
	select {
	case <-p.stopReq:
	case <-p.conn.Done():
	case <-procDone:
	}
	_ = p.conn.Close()
	if p.proc != nil {
		status := p.proc.Stop(p.ipc.opts.ShutdownTimeout)
		if status.Success() {
			p.log.Info("child process exited", "status", status.String())
		} else {
			p.log.Warn("child process exited", "status", status.String())
		}
	} else {
		p.log.Info("connection ended", "reason", p.conn.Err())
	}
	p.ipc.mu.Lock()
	delete(p.ipc.peers, p)
	p.ipc.mu.Unlock()
}

// adopt turns the bootstrap capability of a new outgoing connection into
// the Init proxy handed to the caller: it checks that the peer belongs with
// this executable, and ties the peer's lifetime to the proxy.
func (i *Ipc) adopt(ctx context.Context, p *peer, boot capnp.Client) (schema.Init, error) {
	init := schema.Init(boot)
	if err := protocol.AddCleanup(boot, p.requestStop); err != nil {
		init.Release()
		p.stop()
		return schema.Init{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, i.opts.StartTimeout)
	defer cancel()
	info, err := i.hello(hctx, init)
	if err != nil {
		init.Release()
		p.stop()
		return schema.Init{}, err
	}
	p.log.Info("connected", "peer", info.String())
	return init, nil
}
