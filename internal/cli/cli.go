package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gomultiprocess/multiprocess/process"
)

// Exit statuses of the executables, by class of error. A script can tell
// them apart; people read the message.
const (
	ExitOK           = 0
	ExitFailed       = 1  // anything else: the program or a call failed
	ExitUsage        = 2  // the command line is wrong
	ExitNotConnected = 3  // no node to talk to, or the connection failed
	ExitNotFound     = 4  // what the command names does not exist (a wallet)
	ExitRefused      = 5  // the node refused for now (no wallet, restarting, shutting down)
	ExitDataDamaged  = 65 // a database is damaged (EX_DATAERR): restarting does not help
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

// Duration is a time.Duration flag whose error for a bad value says what
// a duration looks like.
type Duration struct{ D *time.Duration }

func (d Duration) String() string {
	if d.D == nil {
		return ""
	}
	return d.D.String()
}

// Set parses v: a number with a unit, such as 2s, 500ms or 1m.
func (d Duration) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration: give a number with a unit, such as 2s, 500ms or 1m", v)
	}
	*d.D = x
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

// A FlagSet is a command line's flags, Bitcoin Core style (-name=value),
// with the behaviour people expect: -h and -help print the usage on
// standard output and exit 0, -version prints the version and exits 0,
// and an error is one line on standard error plus where to read more,
// with status ExitUsage. Flags may come before or after the positional
// arguments (a command and its arguments).
type FlagSet struct {
	*flag.FlagSet
	name    string
	usage   string
	version string
	stdout  io.Writer
	stderr  io.Writer
	args    []string // positional arguments, in order
}

// NewFlagSet returns the flags of the executable name: usage is its help
// text, printed before the flags' descriptions; version is what -version
// prints.
func NewFlagSet(name, usage, version string) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &FlagSet{FlagSet: fs, name: name, usage: usage, version: version, stdout: os.Stdout, stderr: os.Stderr}
	fs.Bool("version", false, "print the version and exit")
	return f
}

// SetOutput sets where help and version (stdout) and errors (stderr) go.
func (f *FlagSet) SetOutput(stdout, stderr io.Writer) { f.stdout, f.stderr = stdout, stderr }

// Args returns the positional arguments.
func (f *FlagSet) Args() []string { return f.args }

// errExit says that Parse has dealt with the command line: the program
// exits with the status.
type errExit struct{ status int }

func (e errExit) Error() string { return fmt.Sprintf("exit %d", e.status) }

// ExitStatus returns the status a program exits with when Parse or a
// check of its own returned err.
func ExitStatus(err error) int {
	var e errExit
	if errors.As(err, &e) {
		return e.status
	}
	return ExitUsage
}

// Parse parses args (without the program's name). It returns nil to carry
// on, or an error after it has printed what the user needs: the help, the
// version, or a usage error; ExitStatus says how to exit.
func (f *FlagSet) Parse(args []string) error {
	f.args = nil
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.PrintUsage(f.stdout)
				return errExit{ExitOK}
			}
			return f.Fail("%s", f.describe(err))
		}
		if v := f.Lookup("version"); v != nil && v.Value.String() == "true" {
			fmt.Fprintf(f.stdout, "%s %s\n", f.name, f.version)
			return errExit{ExitOK}
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			return nil
		}
		// A positional argument: keep it, and parse what follows it
		// for flags too ("-" alone and what follows "--" stay
		// positional).
		if rest[0] == "--" {
			f.args = append(f.args, rest[1:]...)
			return nil
		}
		f.args = append(f.args, rest[0])
		args = rest[1:]
	}
}

// describe rewrites the flag package's errors in a plainer form.
func (f *FlagSet) describe(err error) string {
	msg := err.Error()
	// "invalid value "abc" for flag -blockinterval: reason"
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		if i := strings.Index(rest, " for flag -"); i >= 0 {
			value, after := rest[:i], rest[i+len(" for flag -"):]
			name, reason, _ := strings.Cut(after, ": ")
			if reason == "parse error" {
				reason = "not a valid value"
			}
			return fmt.Sprintf("-%s=%s: %s", name, strings.Trim(value, `"`), reason)
		}
	}
	if rest, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Sprintf("unknown option %s", rest)
	}
	return msg
}

// Fail prints a usage error, one line and where to read more, and returns
// the error for Parse's caller.
func (f *FlagSet) Fail(format string, args ...any) error {
	fmt.Fprintf(f.stderr, "%s: %s\n", f.name, fmt.Sprintf(format, args...))
	fmt.Fprintf(f.stderr, "Run '%s -help' for usage.\n", f.name)
	return errExit{ExitUsage}
}

// PrintUsage writes the help text and the options to w.
func (f *FlagSet) PrintUsage(w io.Writer) {
	fmt.Fprint(w, f.usage)
	f.FlagSet.SetOutput(w)
	f.FlagSet.PrintDefaults()
	f.FlagSet.SetOutput(io.Discard)
}

// AddressError says in a user's terms what is wrong with an -ipcbind or
// -ipcconnect value that process.ParseAddress refused, with the valid
// forms.
func AddressError(err error) string {
	switch {
	case errors.Is(err, process.ErrUnrecognizedAddress):
		return "not an address: use unix (the default socket in the data directory) or unix:PATH (relative to the data directory unless absolute)"
	case errors.Is(err, process.ErrPathTooLong):
		return fmt.Sprintf("the socket path is too long for a unix socket (at most %d bytes): use a shorter data directory, or unix:/a/short/path", process.MaxPathLen)
	}
	return strings.TrimPrefix(err.Error(), "process: ")
}
