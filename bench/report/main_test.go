package main

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFirstLine(t *testing.T) {
	err := "go test -c -o /tmp/x/1.test github.com/gomultiprocess/multiprocess/bench/peers: exit status 1\n" +
		"go: downloading google.golang.org/grpc v1.85.0\n" +
		"go: google.golang.org/grpc@v1.85.0: module lookup disabled by GOPROXY=off\n"
	if got, want := firstLine(err), "go: google.golang.org/grpc@v1.85.0: module lookup disabled by GOPROXY=off"; got != want {
		t.Errorf("firstLine = %q; want %q", got, want)
	}
	err = "go test -c -o /tmp/x/1.test .: exit status 1\n# github.com/gomultiprocess/multiprocess/bench/peers\n" +
		"internal/peerpb/peer_grpc.pb.go:11:2: module lookup disabled by GOPROXY=off\nFAIL\n"
	if got, want := firstLine(err), "internal/peerpb/peer_grpc.pb.go:11:2: module lookup disabled by GOPROXY=off"; got != want {
		t.Errorf("firstLine = %q; want %q", got, want)
	}
}
