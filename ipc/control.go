package ipc

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/gomultiprocess/multiprocess/ipc/control"
	"github.com/gomultiprocess/multiprocess/mp"
)

// controlServer answers the framework's control interface for one
// connection, beside the application's Init. Its calls run as they come
// (mp.Concurrent): a slow application call must not hold up a handshake
// or a stop.
type controlServer struct {
	mp.ConcurrentCalls
	c *Context
}

func (s *controlServer) Hello(_ context.Context, caller *control.PeerInfo) (*control.PeerInfo, error) {
	return s.c.Hello(caller)
}

func (s *controlServer) Stop(context.Context) error {
	s.c.Stop()
	return nil
}

func (s *controlServer) SubscribeLifetime(_ context.Context, listener control.LifetimeListener) (control.LifetimeSubscription, error) {
	return s.c.SubscribeLifetime(listener)
}

// LocalInfo is what this process tells its peers about itself.
func (c *Context) LocalInfo() *control.PeerInfo {
	return &control.PeerInfo{
		ControlVersion:     control.ControlVersion,
		Application:        c.app,
		ApplicationVersion: c.version,
		Build:              buildString(),
		Executable:         c.ExeName,
		Pid:                int32(pid),
	}
}

// Hello answers a peer's introduction with this process's PeerInfo, or
// with an error matching ErrVersionMismatch and naming both sides when the
// peer belongs to the same application and speaks another version of it.
// The control interface's hello is this; an application that keeps an
// older hello method of its own delegates to it.
func (c *Context) Hello(caller *control.PeerInfo) (*control.PeerInfo, error) {
	if caller == nil {
		return nil, errors.New("hello without a PeerInfo")
	}
	local := c.LocalInfo()
	if err := checkPeer(local, caller); err != nil {
		return nil, err
	}
	return local, nil
}

// Stop asks this process to shut down, as the control interface's stop
// does (see RequestStop), and logs that it was asked.
func (c *Context) Stop() {
	c.Logger.Info("stop requested over IPC")
	c.RequestStop()
}

// SubscribeLifetime streams this process's lifetime events to listener,
// as the control interface's subscribeLifetime does: the history first,
// then each new event, until the returned subscription is released or
// the listener's connection goes. listener is borrowed: the subscription
// takes its own reference.
func (c *Context) SubscribeLifetime(listener control.LifetimeListener) (control.LifetimeSubscription, error) {
	if listener == nil {
		return nil, errors.New("no listener given")
	}
	unsubscribe := c.Lifetime.Subscribe(mp.Retain(listener))
	return &subscription{unsubscribe: unsubscribe}, nil
}

// subscription ends a lifetime subscription when its last reference goes.
type subscription struct {
	once        sync.Once
	unsubscribe func()
}

func (s *subscription) CapabilityReleased() { s.once.Do(s.unsubscribe) }

// checkPeer returns an error naming both sides when they are processes of
// one application with different versions of it.
func checkPeer(local, remote *control.PeerInfo) error {
	if local.Application != remote.Application || local.ApplicationVersion == remote.ApplicationVersion {
		return nil
	}
	return fmt.Errorf("%w: %s and %s", ErrVersionMismatch, DescribePeer(local), DescribePeer(remote))
}

// DescribePeer describes a peer for logs and errors: "wallet (pid 42,
// demo version 2, build v1.0.0 0123abcd)".
func DescribePeer(p *control.PeerInfo) string {
	if p == nil {
		return "a peer without a control channel"
	}
	app := p.Application
	if app == "" {
		app = "application"
	}
	return fmt.Sprintf("%s (pid %d, %s version %d, build %s)", p.Executable, p.Pid, app, p.ApplicationVersion, p.Build)
}

// Build describes this executable's build, as the handshake does: the
// main module's version and VCS revision ("v1.2.0 0123456789ab", "(devel)
// 0123456789ab-dirty"). A program's -version can print it.
func Build() string { return buildString() }

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
