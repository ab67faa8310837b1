package rpcconn

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testStateFault = recordStateFault
	goleak.VerifyTestMain(checkStateFaults{m})
}

// Refused state transitions (states.go) end a connection as a bug does,
// which a test may not notice: every one is recorded here, and the run
// fails if any happened on a connection not in deliberateFaults.
var (
	faultsMu         sync.Mutex
	faults           []error
	deliberateFaults = map[*Conn]bool{}
)

func recordStateFault(c *Conn, err error) {
	faultsMu.Lock()
	defer faultsMu.Unlock()
	if !deliberateFaults[c] {
		faults = append(faults, err)
	}
}

// faultOnPurpose marks c as a connection whose refused transitions a
// test makes on purpose.
func faultOnPurpose(c *Conn) {
	faultsMu.Lock()
	deliberateFaults[c] = true
	faultsMu.Unlock()
}

type checkStateFaults struct{ *testing.M }

func (m checkStateFaults) Run() int {
	code := m.M.Run()
	faultsMu.Lock()
	defer faultsMu.Unlock()
	if len(faults) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d state transitions refused (states.go), the first: %v\n", len(faults), faults[0])
		if code == 0 {
			code = 1
		}
	}
	return code
}
