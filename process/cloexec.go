package process

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// MarkInheritedCloseOnExec sets FD_CLOEXEC on every descriptor above 2 that
// this process has open, as listed in /proc/self/fd.
//
// Go opens all its own descriptors close-on-exec, but descriptors this
// process inherited from its parent keep whatever flag they came with, and
// without this they would pass on to every child it starts. Setting the flag
// on a descriptor that already has it changes nothing, so this is safe while
// other goroutines open and close files; exec.Cmd clears the flag on the
// copies it hands to a child on purpose (ExtraFiles), so those still arrive.
func MarkInheritedCloseOnExec() error {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("process: list open descriptors: %w", err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return fmt.Errorf("process: list open descriptors: %w", err)
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd <= 2 {
			continue
		}
		// FD_CLOEXEC is the only descriptor flag, so setting it outright
		// loses nothing. EBADF: closed since the listing (the directory's
		// own descriptor among them), nothing to do.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("process: mark descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
