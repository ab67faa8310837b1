package protocol

import (
	"testing"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// A call log names a method that no server or proxy of this process has
// taught it from the registered schemas (package schema registers its
// own); unknown IDs stay numeric.
func TestMethodNameFromRegistry(t *testing.T) {
	if got, want := methodName(schema.LifetimeListener_TypeID, 0), "LifetimeListener.event"; got != want {
		t.Errorf("methodName(LifetimeListener, 0) = %q, want %q", got, want)
	}
	if got := methodName(0x1234, 7); got == "" || got == "LifetimeListener.event" {
		t.Errorf("methodName of an unknown interface = %q", got)
	}
}
