package ipc

import (
	"context"
	"fmt"

	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// BaseInit implements the Init methods that every executable serves the
// same way. An executable's Init embeds it and adds its own methods.
type BaseInit struct {
	Ctx  *Context
	Conn *protocol.Conn
}

// Serve turns an Init implementation into a capability, with panics
// recovered and calls logged under -debug=ipc.
func (c *Context) Serve(impl schema.Init_Server) schema.Init {
	return schema.Init(protocol.NewServer(schema.Init_Methods(nil, impl), impl, c.serverOptions()))
}

func (c *Context) serverOptions() *protocol.ServerOptions {
	// Calls are logged by the connection (protocol.Options.DebugCalls);
	// the server only logs recovered panics.
	return &protocol.ServerOptions{Logger: c.Logger}
}

// Hello answers a peer's introduction with this executable's PeerInfo, or
// an error naming both sides when they speak different protocol versions.
func (b *BaseInit) Hello(_ context.Context, call schema.Init_hello) error {
	r, err := call.Args().Caller()
	if err != nil {
		return fmt.Errorf("read caller: %w", err)
	}
	caller, err := readPeerInfo(r)
	if err != nil {
		return err
	}
	local := b.Ctx.LocalInfo()
	if err := checkVersions(local, caller); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewCallee()
	if err != nil {
		return err
	}
	return local.write(w)
}

// MakeEcho returns a new Echo served by this process.
func (b *BaseInit) MakeEcho(_ context.Context, call schema.Init_makeEcho) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(schema.Echo(protocol.NewServer(schema.Echo_Methods(nil, echo{}), echo{}, b.Ctx.serverOptions())))
}

// echo returns its argument unchanged.
type echo struct{}

func (echo) Echo(_ context.Context, call schema.Echo_echo) error {
	s, err := call.Args().Echo()
	if err != nil {
		return fmt.Errorf("read argument: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetResult(s)
}
