package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
)

// Debug collects -debug=CATEGORY flags; it may be given several times or
// with a comma-separated list.
type Debug []string

func (d *Debug) String() string { return strings.Join(*d, ",") }

// Set adds the categories in v.
func (d *Debug) Set(v string) error {
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		switch c {
		case "":
		case "ipc", "1", "all":
			*d = append(*d, c)
		default:
			return fmt.Errorf("unknown debug category %q (known: ipc, all)", c)
		}
	}
	return nil
}

// Has reports whether category is enabled, directly or through "all"/"1".
func (d Debug) Has(category string) bool {
	return slices.Contains(d, category) || slices.Contains(d, "all") || slices.Contains(d, "1")
}

// Strings collects a flag that may be given several times.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set appends v.
func (s *Strings) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// NewLogger returns the logger of the executable name: text lines on w,
// each carrying the process name and pid, at debug level when debug is
// set.
func NewLogger(w io.Writer, name string, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h).With("process", name, "pid", os.Getpid())
}

// NewFlagSet returns a flag set for the executable name whose errors go to
// stderr with the given usage text.
func NewFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}
