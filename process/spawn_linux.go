package process

import (
	"os"

	"golang.org/x/sys/unix"
)

// socketpair returns the two ends of a new AF_UNIX stream socketpair, both
// close-on-exec from the moment they exist, so a concurrent fork elsewhere in
// this process cannot carry them off. exec.Cmd clears the flag on the copy
// it installs as the child's descriptor 3.
func socketpair() (parentEnd, childEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "ipc-parent"), os.NewFile(uintptr(fds[1]), "ipc-child"), nil
}
