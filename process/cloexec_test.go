package process

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func getFD(t *testing.T, fd int) int {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD %d: %v", fd, err)
	}
	return flags
}

func TestMarkInheritedCloseOnExec(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// dup(2) makes a descriptor without FD_CLOEXEC, as an inherited one is.
	inherited, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(inherited)
	if getFD(t, inherited)&unix.FD_CLOEXEC != 0 {
		t.Fatal("dup gave a close-on-exec descriptor")
	}
	var stdio [3]int
	for fd := range stdio {
		stdio[fd] = getFD(t, fd)
	}

	if err := MarkInheritedCloseOnExec(); err != nil {
		t.Fatal(err)
	}
	if getFD(t, inherited)&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor %d still lacks FD_CLOEXEC", inherited)
	}
	if getFD(t, int(r.Fd()))&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor %d lost FD_CLOEXEC", r.Fd())
	}
	for fd, before := range stdio {
		if after := getFD(t, fd); after != before {
			t.Errorf("descriptor %d flags changed from %#x to %#x", fd, before, after)
		}
	}
}
