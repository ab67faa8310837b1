// Command plugins is an example of package ipc that has nothing to do with
// the reference node: a host runs each of its plugins in a process of its
// own, calls them through plain Go interfaces, and carries on when one of
// them crashes, which supervision restarts.
//
// It is one binary: the host spawns itself once per plugin, in the
// plugin's role (ipc.RunRole). Run it with words to transform:
//
//	go run ./examples/plugins hello crash world
//
// The "crashy" plugin exits as if it had crashed when it is given
// "crash"; the host reports that word as failed for it, and the plugin is
// back for the next word.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gomultiprocess/multiprocess/examples/plugins/pluginapi"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// The plugins, by name: each runs in a process of its own.
var plugins = map[string]pluginapi.Plugin{
	"upper":   upper{},
	"reverse": reverse{},
	"crashy":  crashy{},
}

const (
	application = "plugins-example"
	version     = 1
)

func main() {
	// A plugin process is this binary started in the plugin's role:
	// dispatch first thing.
	roles := make(map[string]func() int)
	for name := range plugins {
		roles[name] = func() int { return servePlugin(name) }
	}
	ipc.RunRole(roles)
	os.Exit(host(os.Args[1:]))
}

// logger logs warnings and errors to standard error, with the process.
func logger(name string) *slog.Logger {
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(h).With("process", name)
}

// servePlugin is the main of a plugin process: it serves the plugin's
// Init to the host until the host lets it go.
func servePlugin(name string) int {
	log := logger(name)
	i := ipc.New(name, os.Args[0], pluginapi.InitInterface, func(*ipc.Context, *protocol.Conn) pluginapi.Init {
		return pluginInit{plugins[name]}
	}, &ipc.Options{Logger: log, Application: application, ApplicationVersion: version})
	handled, status := i.StartSpawnedProcess(os.Args)
	if !handled {
		fmt.Fprintf(os.Stderr, "plugins: the %s role runs only as a child of the host\n", name)
		return 2
	}
	return status
}

// pluginInit is a plugin process's Init.
type pluginInit struct{ p pluginapi.Plugin }

func (i pluginInit) Plugin(context.Context) (pluginapi.Plugin, error) { return i.p, nil }

// host spawns every plugin under supervision and has each transform every
// word of args, printing one line per word and plugin.
func host(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: plugins WORD...")
		return 2
	}
	log := logger("host")
	names := make([]string, 0, len(plugins))
	for name := range plugins {
		names = append(names, name)
	}
	slices.Sort(names)
	// The host serves no Init of its own (newInit is nil): it only
	// spawns.
	i := ipc.New("host", os.Args[0], pluginapi.InitInterface, nil, &ipc.Options{
		Logger:             log,
		Application:        application,
		ApplicationVersion: version,
		SelfRoles:          names,
	})
	defer i.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	policy := ipc.RestartPolicy{MaxRestarts: 3, Window: time.Minute, Backoff: 50 * time.Millisecond}
	sups := make(map[string]*ipc.Supervised[pluginapi.Init], len(names))
	for _, name := range names {
		check := func(ctx context.Context, init pluginapi.Init) error {
			p, err := init.Plugin(ctx)
			if err != nil {
				return err
			}
			defer mp.Release(p)
			got, err := p.Name(ctx)
			if err == nil && got != name {
				err = fmt.Errorf("plugin %s calls itself %s", name, got)
			}
			return err
		}
		sup, err := i.Supervise(ctx, ipc.ChildSpec{Name: name}, policy, check, nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "plugins: start %s: %v\n", name, err)
			return 1
		}
		defer sup.Stop()
		sups[name] = sup
	}
	for _, word := range args {
		for _, name := range names {
			out, err := transform(ctx, sups[name], word)
			if err != nil {
				fmt.Printf("%s %s: failed: %v\n", name, word, errors.Unwrap(err))
				continue
			}
			fmt.Printf("%s %s: %s\n", name, word, out)
		}
	}
	return 0
}

// transform has the plugin under sup transform word, waiting for the
// plugin while it restarts. The call itself is never retried: a plugin
// that crashes during it fails the word.
func transform(ctx context.Context, sup *ipc.Supervised[pluginapi.Init], word string) (string, error) {
	for {
		init, err := sup.Current()
		if errors.Is(err, ipc.ErrChildRestarting) {
			select {
			case <-time.After(20 * time.Millisecond):
				continue
			case <-ctx.Done():
				return "", fmt.Errorf("wait for the plugin: %w", err)
			}
		}
		if err != nil {
			return "", fmt.Errorf("plugin unavailable: %w", err)
		}
		defer mp.Release(init)
		p, err := init.Plugin(ctx)
		if err != nil {
			return "", fmt.Errorf("plugin: %w", err)
		}
		defer mp.Release(p)
		out, err := p.Transform(ctx, word)
		if err != nil {
			if errors.Is(err, mp.ErrDisconnected) {
				// Let supervision see the crash before the next
				// word, so that it goes to the new process.
				waitReplaced(ctx, sup, init)
				return "", fmt.Errorf("transform: %w", errors.New("the plugin crashed"))
			}
			return "", fmt.Errorf("transform: %w", err)
		}
		return out, nil
	}
}

// waitReplaced waits until sup no longer offers old: it is restarting,
// or running anew.
func waitReplaced(ctx context.Context, sup *ipc.Supervised[pluginapi.Init], old pluginapi.Init) {
	for ctx.Err() == nil {
		cur, err := sup.Current()
		if err != nil {
			return
		}
		same := cur.(*pluginapi.InitClient).MPClient().Capnp().IsSame(old.(*pluginapi.InitClient).MPClient().Capnp())
		mp.Release(cur)
		if !same {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upper makes its input upper case.
type upper struct{}

func (upper) Name(context.Context) (string, error) { return "upper", nil }
func (upper) Transform(_ context.Context, s string) (string, error) {
	return strings.ToUpper(s), nil
}

// reverse reverses its input.
type reverse struct{}

func (reverse) Name(context.Context) (string, error) { return "reverse", nil }
func (reverse) Transform(_ context.Context, s string) (string, error) {
	r := []rune(s)
	slices.Reverse(r)
	return string(r), nil
}

// crashy appends "!" to its input, and exits as if it had crashed when
// the input is "crash".
type crashy struct{}

func (crashy) Name(context.Context) (string, error) { return "crashy", nil }
func (crashy) Transform(_ context.Context, s string) (string, error) {
	if s == "crash" {
		os.Exit(3)
	}
	return s + "!", nil
}
