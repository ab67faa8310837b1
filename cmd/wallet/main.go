package main

import (
	"os"

	"github.com/gomultiprocess/multiprocess/init/wallet"
)

func main() { os.Exit(wallet.Main(os.Args)) }
