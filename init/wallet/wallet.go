package wallet

import (
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// ExeName is the wallet executable's name, which a node spawns.
const ExeName = "wallet"

// Init is the wallet's Init for one connection. It serves
// makeWalletLoader when it belongs to a Process; one made by NewInit
// serves only what every executable serves.
type Init struct {
	ipc.BaseInit
	proc *Process // nil for NewInit
}

// NewInit is an ipc.InitFactory for an Init that serves only
// ipc.BaseInit's methods, for a wallet run by hand.
func NewInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}})
}
