package process

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func TestCheckSpawned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		fd      int
		spawned bool
		errHas  string // "" means no error
	}{
		{"no args", nil, 0, false, ""},
		{"exe only", []string{"node"}, 0, false, ""},
		{"no flag", []string{"node", "-datadir", "/tmp/x"}, 0, false, ""},
		{"exe named like the flag", []string{"-ipcfd"}, 0, false, ""},
		{"other dash flag", []string{"node", "--ipcfd", "3"}, 0, false, ""},
		{"good", []string{"wallet", "-ipcfd", "3"}, 3, true, ""},
		{"good zero", []string{"wallet", "-ipcfd", "0"}, 0, true, ""},
		{"good large", []string{"wallet", "-ipcfd", "1000"}, 1000, true, ""},
		{"equals form", []string{"wallet", "-ipcfd=7"}, 7, true, ""},
		{"not a number", []string{"wallet", "-ipcfd", "abc"}, 0, true, `-ipcfd "abc" is not a descriptor number`},
		{"equals not a number", []string{"wallet", "-ipcfd=abc"}, 0, true, `-ipcfd "abc" is not a descriptor number`},
		{"negative", []string{"wallet", "-ipcfd", "-1"}, 0, true, `-ipcfd "-1" is not a descriptor number`},
		{"plus sign", []string{"wallet", "-ipcfd", "+3"}, 0, true, `-ipcfd "+3" is not a descriptor number`},
		{"hex", []string{"wallet", "-ipcfd", "0x3"}, 0, true, `-ipcfd "0x3" is not a descriptor number`},
		{"space", []string{"wallet", "-ipcfd", " 3"}, 0, true, `-ipcfd " 3" is not a descriptor number`},
		{"too big", []string{"wallet", "-ipcfd", "99999999999999999999"}, 0, true, "is not a descriptor number"},
		{"beyond int32", []string{"wallet", "-ipcfd", "2147483648"}, 0, true, "is not a descriptor number"},
		{"empty value", []string{"wallet", "-ipcfd", ""}, 0, true, `-ipcfd "" is not a descriptor number`},
		{"equals empty", []string{"wallet", "-ipcfd="}, 0, true, `-ipcfd "" is not a descriptor number`},
		{"missing value", []string{"wallet", "-ipcfd"}, 0, true, "-ipcfd needs a descriptor number"},
		{"extra arg", []string{"wallet", "-ipcfd", "3", "extra"}, 0, true, `unexpected argument "extra" beside -ipcfd`},
		{"extra arg equals form", []string{"wallet", "-ipcfd=3", "extra"}, 0, true, `unexpected argument "extra" beside -ipcfd`},
		{"flag twice", []string{"wallet", "-ipcfd", "3", "-ipcfd", "4"}, 0, true, `unexpected argument "-ipcfd" beside -ipcfd`},
		{"flag in the wrong place", []string{"wallet", "-debug", "-ipcfd", "3"}, 0, true, `unexpected argument "-debug" beside -ipcfd`},
		{"flag last", []string{"wallet", "3", "-ipcfd=3"}, 0, true, `unexpected argument "3" beside -ipcfd`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, spawned, err := CheckSpawned(tc.args)
			if tc.errHas == "" {
				if err != nil || fd != tc.fd || spawned != tc.spawned {
					t.Errorf("CheckSpawned(%q) = %d, %v, %v; want %d, %v, nil", tc.args, fd, spawned, err, tc.fd, tc.spawned)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckSpawned(%q) = %d, %v, nil; want an error", tc.args, fd, spawned)
			}
			if !errors.Is(err, ErrBadSpawnArgs) {
				t.Errorf("error %q does not wrap ErrBadSpawnArgs", err)
			}
			if !strings.HasPrefix(err.Error(), "process: ") || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q, want it to contain %q", err, tc.errHas)
			}
			if !spawned {
				t.Errorf("spawned = false with error %v, want true", err)
			}
		})
	}
}

func TestSocketConn(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	id := fdID(t, fds[0])

	conn, err := SocketConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Errorf("SocketConn gave %T, want *net.UnixConn", conn)
	}
	// The original number is closed (or, if something reused it already,
	// names another file).
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err == nil && (fileID{uint64(st.Dev), st.Ino}) == id {
		t.Errorf("descriptor %d still open after SocketConn", fds[0])
	}
	if _, err := peer.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Errorf("read %q, %v; want ping", buf, err)
	}
}

func TestSocketConnRejects(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	dgram, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dgram)
	closedR, closedW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	closedW.Close()
	closed := int(closedR.Fd())
	closedR.Close()

	for _, tc := range []struct {
		name   string
		fd     int
		errHas string
		is     error
	}{
		{"pipe", int(r.Fd()), "is not a socket", unix.ENOTSOCK},
		// Closed last and nothing here runs concurrently, so the number
		// stays free; MaxInt32 is beyond any descriptor the kernel gives.
		{"closed", closed, "is not a socket", unix.EBADF},
		{"never open", math.MaxInt32, "is not a socket", unix.EBADF},
		{"negative", -1, "is not a socket", unix.EBADF},
		{"datagram", dgram, "is not a stream socket", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := SocketConn(tc.fd)
			if err == nil {
				conn.Close()
				t.Fatalf("SocketConn(%d) succeeded", tc.fd)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q, want it to contain %q", err, tc.errHas)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
	// A rejected descriptor stays open and the caller's.
	if _, err := unix.FcntlInt(r.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("pipe closed by the rejecting SocketConn: %v", err)
	}
}
