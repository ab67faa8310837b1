// Command greeter is README.md's quick start: one binary that runs a
// second copy of itself as a child process and calls it through a plain
// Go interface generated from greeterapi/greeter.capnp.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/gomultiprocess/multiprocess/examples/greeter/greeterapi"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

func main() {
	// Started in the greeter role, this binary is the child.
	ipc.RunRole(map[string]func() int{"greeter": serveGreeter})

	if err := greet(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "greeter:", err)
		os.Exit(1)
	}
}

// greet spawns the child and calls it.
func greet(ctx context.Context) error {
	i := ipc.New("main", os.Args[0], greeterapi.InitInterface, nil,
		&ipc.Options{SelfRoles: []string{"greeter"}})
	defer i.Close()

	child, err := i.SpawnProcess(ctx, "greeter")
	if err != nil {
		return err
	}
	defer mp.Release(child) // asks the child to stop, and reaps it

	g, err := child.Greeter(ctx)
	if err != nil {
		return err
	}
	defer mp.Release(g)

	for _, name := range []string{"world", ""} {
		greeting, err := g.Greet(ctx, name)
		switch {
		case errors.Is(err, greeterapi.ErrNoName):
			fmt.Println("the child refused:", err)
		case err != nil:
			return err
		default:
			fmt.Println(greeting)
		}
	}
	return nil
}

// serveGreeter is the child's main: it serves its Init to the parent
// until the parent lets it go, and returns the exit status.
func serveGreeter() int {
	i := ipc.New("greeter", os.Args[0], greeterapi.InitInterface,
		func(*ipc.Context, *protocol.Conn) greeterapi.Init { return initServer{} }, nil)
	_, status := i.StartSpawnedProcess(os.Args)
	return status
}

type initServer struct{}

func (initServer) Greeter(context.Context) (greeterapi.Greeter, error) {
	return greeter{}, nil
}

type greeter struct{}

func (greeter) Greet(_ context.Context, name string) (string, error) {
	if name == "" {
		return "", greeterapi.ErrNoName
	}
	return fmt.Sprintf("hello, %s, from process %d", name, os.Getpid()), nil
}
