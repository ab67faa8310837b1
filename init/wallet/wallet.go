package wallet

import (
	"fmt"
	"os"

	"github.com/gomultiprocess/multiprocess/internal/appinit"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/schema"
)

// ExeName is the wallet executable's name, which a node spawns (or the
// role a node binary spawns itself in).
const ExeName = "wallet"

// ExitDamaged is the status with which a spawned wallet exits when its
// data is damaged: its supervisor never restarts it for that.
const ExitDamaged = cli.ExitDataDamaged

// Init is the wallet's Init for one connection. It serves
// makeWalletLoader when it belongs to a Process; one made by NewInit
// serves only what every executable serves.
type Init struct {
	appinit.Base
	proc *Process // nil for NewInit
}

// NewInit is an ipc.InitFactory for an Init that serves only what every
// executable serves, for a wallet run by hand.
func NewInit(ctx *ipc.Context, _ *protocol.Conn) schema.Init {
	return &Init{Base: appinit.Base{Ctx: ctx}}
}

// Spawned is the main of a wallet spawned by a node (as the wallet
// executable, or as the node binary in the wallet role): it serves the
// wallet process on the inherited socket and returns the exit status.
// Its settings come from the environment and over IPC, never from the
// command line. handled is false when args do not say that the process
// was spawned.
func Spawned(args []string) (status int, handled bool) {
	var debug cli.Debug
	if err := debug.Set(os.Getenv(ipc.EnvDebug)); err != nil {
		fmt.Fprintf(os.Stderr, "wallet: %s: %v\n", ipc.EnvDebug, err)
		return 1, true
	}
	debugIPC := debug.Has("ipc")
	log := cli.NewLogger(os.Stderr, ExeName, debugIPC)
	i := ipc.New(ExeName, args[0], schema.InitInterface, NewProcess().NewInit, &ipc.Options{
		Logger:             log,
		DebugIPC:           debugIPC,
		Application:        schema.Application,
		ApplicationVersion: schema.ProtocolVersion,
		LegacySubsystems:   appinit.LegacySubsystems,
	})
	handled, status = i.StartSpawnedProcess(args)
	if !handled {
		_ = i.Close()
	}
	return status, handled
}
