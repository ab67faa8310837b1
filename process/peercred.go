package process

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrForeignUID is returned by CheckPeer when the process at the other end of
// a unix socket runs as a different user than this one.
var ErrForeignUID = errors.New("process: peer has a foreign uid")

// PeerCred is what the kernel recorded about the process at the other end of
// a unix socket when it connected (SO_PEERCRED). The peer cannot forge it.
type PeerCred struct {
	PID      int32
	UID, GID uint32
}

// PeerCredentials returns the credentials of the peer of c, which must be a
// unix domain socket (a *net.UnixConn, or a conn from Spawn or Listen).
func PeerCredentials(c net.Conn) (PeerCred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return PeerCred{}, fmt.Errorf("process: peer credentials: %T has no descriptor: %w", c, errors.ErrUnsupported)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return PeerCred{}, fmt.Errorf("process: peer credentials: %w", err)
	}
	var (
		cred   *unix.Ucred
		domain int
		opErr  error
	)
	err = rc.Control(func(fd uintptr) {
		// For sockets of other families, SO_PEERCRED reports made-up values
		// (uid 65534) instead of failing, so check the family first.
		domain, opErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if opErr != nil {
			opErr = os.NewSyscallError("getsockopt SO_DOMAIN", opErr)
			return
		}
		if domain != unix.AF_UNIX {
			return
		}
		cred, opErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if opErr != nil {
			opErr = os.NewSyscallError("getsockopt SO_PEERCRED", opErr)
		}
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return PeerCred{}, fmt.Errorf("process: peer credentials: %w", err)
	}
	if domain != unix.AF_UNIX {
		return PeerCred{}, fmt.Errorf("process: peer credentials: socket family %d is not AF_UNIX: %w", domain, errors.ErrUnsupported)
	}
	return PeerCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// CheckPeer returns the peer's credentials, and an error wrapping
// ErrForeignUID if the peer's uid is not this process's. Root gets no
// exception: a node run as root accepts root peers only.
func CheckPeer(c net.Conn) (PeerCred, error) {
	cred, err := PeerCredentials(c)
	if err != nil {
		return cred, err
	}
	if own := uint32(os.Getuid()); cred.UID != own {
		return cred, fmt.Errorf("%w: pid %d runs as uid %d, this process as uid %d", ErrForeignUID, cred.PID, cred.UID, own)
	}
	return cred, nil
}
