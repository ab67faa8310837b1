package ipc_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gomultiprocess/multiprocess/ipc"
)

// A "not served" error is recognised wrapped in this process and, by its
// message, after it crossed a connection as a Cap'n Proto exception.
func TestIsNotServed(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("makeNode: %w (wallet)", ipc.ErrNotServed), true},
		{errors.New("init.capnp:Init.makeNode: makeNode: ipc: not served by this process (wallet)"), true},
		{errors.New("some other failure"), false},
		{nil, false},
	}
	for _, c := range cases {
		if got := ipc.IsNotServed(c.err); got != c.want {
			t.Errorf("IsNotServed(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
