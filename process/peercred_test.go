package process

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
)

func TestPeerCredentials(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	path := filepath.Join(shortDir(t), "node.sock")
	l := listen(t, path, nil)

	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	client, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var server net.Conn
	select {
	case server = <-accepted:
		defer server.Close()
	case err := <-acceptErr:
		t.Fatalf("Accept: %v", err)
	case <-ctx.Done():
		t.Fatal("Accept did not return")
	}

	want := PeerCred{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	for name, c := range map[string]net.Conn{"server end": server, "client end": client} {
		got, err := PeerCredentials(c)
		if err != nil || got != want {
			t.Errorf("PeerCredentials(%s) = %+v, %v; want %+v", name, got, err, want)
		}
		got, err = CheckPeer(c)
		if err != nil || got != want {
			t.Errorf("CheckPeer(%s) = %+v, %v; want %+v", name, got, err, want)
		}
	}
}

func TestPeerCredentialsNotUnix(t *testing.T) {
	fdcheck.CheckSame(t, fdWait)
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if _, err := PeerCredentials(p1); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("PeerCredentials(net.Pipe) = %v, want %v", err, errors.ErrUnsupported)
	}

	// Linux answers SO_PEERCRED on an IP socket with made-up values rather
	// than an error; PeerCredentials must not pass them on.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if cred, err := PeerCredentials(udp); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("PeerCredentials(UDP socket) = %+v, %v; want %v", cred, err, errors.ErrUnsupported)
	}
	if _, err := CheckPeer(udp); err == nil || errors.Is(err, ErrForeignUID) {
		t.Errorf("CheckPeer(UDP socket) = %v, want the credentials error", err)
	}
}
