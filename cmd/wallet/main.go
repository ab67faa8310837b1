package main

import (
	"fmt"
	"os"
	"strings"

	walletinit "github.com/gomultiprocess/multiprocess/init/wallet"
	"github.com/gomultiprocess/multiprocess/internal/cli"
	"github.com/gomultiprocess/multiprocess/ipc"
)

const usage = `Usage: wallet -ipcfd N

The wallet runs as a child of the node, which starts it with -ipcfd and
talks to it over that socket. Start the node instead:

  node -datadir=DIR
`

func main() { os.Exit(run(os.Args)) }

func run(args []string) int {
	var debug cli.Debug
	if err := debug.Set(os.Getenv(ipc.EnvDebug)); err != nil {
		fmt.Fprintf(os.Stderr, "wallet: %s: %v\n", ipc.EnvDebug, err)
		return 1
	}
	debugIPC := debug.Has("ipc")
	log := cli.NewLogger(os.Stderr, walletinit.ExeName, debugIPC)
	i := ipc.New(walletinit.ExeName, args[0], walletinit.NewInit, &ipc.Options{Logger: log, DebugIPC: debugIPC})
	if handled, status := i.StartSpawnedProcess(args); handled {
		return status
	}
	if len(args) > 1 && strings.TrimLeft(args[1], "-") != "h" && strings.TrimLeft(args[1], "-") != "help" {
		fmt.Fprintf(os.Stderr, "wallet: unexpected argument %q\n", args[1])
	}
	fmt.Fprint(os.Stderr, usage)
	return 2
}
