package main

import (
	"os"

	"github.com/gomultiprocess/multiprocess/init/node"
	"github.com/gomultiprocess/multiprocess/ipc"
)

func main() {
	ipc.RunRole(node.Roles())
	os.Exit(node.Main(os.Args))
}
