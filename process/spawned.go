package process

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrBadSpawnArgs is wrapped by every error [CheckSpawned] returns: the
// command line asks for a spawned process but is not one Spawn would give.
var ErrBadSpawnArgs = errors.New("process: bad spawn arguments")

const ipcfdFlag = "-ipcfd"

// CheckSpawned tells from a process's arguments (os.Args) whether it was
// started by [Spawn], and on which descriptor its socket is:
//
//   - no "-ipcfd" among the arguments: not spawned (0, false, nil);
//   - exactly [exe, "-ipcfd", N] or [exe, "-ipcfd=N"], N a non-negative
//     decimal integer: spawned on descriptor N (N, true, nil);
//   - anything else with "-ipcfd" in it (a bad or missing number, another
//     argument beside it, the flag out of place): an error wrapping
//     [ErrBadSpawnArgs] that names the problem, with spawned true, since the
//     process was plainly meant to be a spawned one.
//
// Only the single-dash spelling is recognised, as Spawn writes it. A spawned
// process takes its settings over IPC, never from extra arguments.
func CheckSpawned(args []string) (fd int, spawned bool, err error) {
	if len(args) < 2 {
		return 0, false, nil
	}
	at := -1
	for i, a := range args[1:] {
		if isIPCFDFlag(a) {
			at = i + 1
			break
		}
	}
	if at < 0 {
		return 0, false, nil
	}
	if at != 1 {
		return 0, true, fmt.Errorf("%w: unexpected argument %q beside %s", ErrBadSpawnArgs, args[1], ipcfdFlag)
	}

	var value string
	rest := args[2:]
	if v, ok := strings.CutPrefix(args[1], ipcfdFlag+"="); ok {
		value = v
	} else {
		if len(rest) == 0 {
			return 0, true, fmt.Errorf("%w: %s needs a descriptor number", ErrBadSpawnArgs, ipcfdFlag)
		}
		value, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return 0, true, fmt.Errorf("%w: unexpected argument %q beside %s", ErrBadSpawnArgs, rest[0], ipcfdFlag)
	}
	fd, ok := parseFD(value)
	if !ok {
		return 0, true, fmt.Errorf("%w: %s %q is not a descriptor number", ErrBadSpawnArgs, ipcfdFlag, value)
	}
	return fd, true, nil
}

func isIPCFDFlag(a string) bool {
	return a == ipcfdFlag || strings.HasPrefix(a, ipcfdFlag+"=")
}

// parseFD accepts plain decimal digits only: no sign, no spaces, no 0x, and
// nothing beyond what the kernel's int descriptors can hold.
func parseFD(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > math.MaxInt32 {
		return 0, false
	}
	return n, true
}

// SocketConn turns an inherited descriptor into a [net.Conn] (a
// *net.UnixConn for the socket Spawn hands over) after checking that it is
// an open stream socket.
//
// If the check fails, the descriptor is left alone and the error says why:
// "descriptor 3 is not a socket: bad file descriptor" for one that is not
// open, "... socket operation on non-socket" for a pipe or file. Once the
// check passes the connection owns the socket: the descriptor number itself
// is closed (the connection holds a close-on-exec duplicate, so the socket
// does not leak into processes this one starts).
func SocketConn(fd int) (net.Conn, error) {
	if fd < 0 || fd > math.MaxInt32 {
		return nil, fmt.Errorf("process: descriptor %d is not a socket: %w", fd, unix.EBADF)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("process: descriptor %d is not a socket: %w", fd, err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("process: descriptor %d is not a stream socket (SO_TYPE %d)", fd, typ)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("ipcfd-%d", fd))
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("process: descriptor %d: %w", fd, err)
	}
	return conn, nil
}
