package wallet

import (
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// ExeName is the wallet executable's name, which a node spawns.
const ExeName = "wallet"

// Init is the wallet's Init for one connection.
type Init struct {
	ipc.BaseInit
}

// NewInit is the wallet's ipc.InitFactory.
func NewInit(ctx *ipc.Context, conn *protocol.Conn) schema.Init {
	return ctx.Serve(&Init{BaseInit: ipc.BaseInit{Ctx: ctx, Conn: conn}})
}
