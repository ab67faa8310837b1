package protocol_test

import (
	"testing"

	"go.uber.org/goleak"

	// Registers the schema's names, as it does in a program, so that call
	// lines name what this process only calls. testschema stays
	// unregistered: its names come from NewServer.
	_ "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
