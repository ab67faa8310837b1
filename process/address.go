package process

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// MaxPathLen is the longest unix socket path Linux accepts: sun_path holds
// 108 bytes, and the path must leave room for its terminating NUL.
const MaxPathLen = 107

var (
	// ErrUnrecognizedAddress is returned by ParseAddress for anything that is
	// not "unix" or "unix:PATH", including the abstract namespace
	// ("unix:@name"), which has no file mode and so no access control.
	ErrUnrecognizedAddress = errors.New("process: unrecognized address")
	// ErrPathTooLong means a socket path does not fit in sun_path.
	ErrPathTooLong = errors.New("process: socket path too long")
)

const addressScheme = "unix"

// ParseAddress resolves an -ipcbind or -ipcconnect value to an absolute,
// cleaned socket path.
//
// "unix" and "unix:" mean <dataDir>/<name>.sock: for -ipcbind, name is the
// listening executable's name; for -ipcconnect it is the destination's
// ("node"), whatever the connecting program is called. "unix:PATH" is relative
// to dataDir unless PATH is absolute; a relative dataDir is taken from the
// working directory. Everything else, "unix:@name" included, is
// ErrUnrecognizedAddress; a path longer than MaxPathLen is ErrPathTooLong.
func ParseAddress(dataDir, name, addr string) (string, error) {
	rest, ok := strings.CutPrefix(addr, addressScheme)
	if !ok || (rest != "" && rest[0] != ':') {
		return "", unrecognized(addr)
	}
	rest = strings.TrimPrefix(rest, ":")
	if strings.HasPrefix(rest, "@") || strings.IndexByte(rest, 0) >= 0 {
		return "", unrecognized(addr)
	}
	if rest == "" {
		if name == "" || strings.ContainsRune(name, filepath.Separator) || name == "." || name == ".." {
			return "", fmt.Errorf("process: default socket for address %q: %q is not a file name", addr, name)
		}
		rest = name + ".sock"
	}
	path := rest
	if !filepath.IsAbs(path) {
		path = filepath.Join(dataDir, path)
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("process: resolve address %q: %w", addr, err)
	}
	if err := checkPathLen(path); err != nil {
		return "", err
	}
	return path, nil
}

// Address formats a socket path in the canonical form used in logs and
// messages, "unix:/full/path".
func Address(path string) string {
	return addressScheme + ":" + path
}

func unrecognized(addr string) error {
	return fmt.Errorf("%w %q", ErrUnrecognizedAddress, addr)
}

func checkPathLen(path string) error {
	if len(path) > MaxPathLen {
		return fmt.Errorf("%w: %q is %d bytes, at most %d fit", ErrPathTooLong, path, len(path), MaxPathLen)
	}
	return nil
}
