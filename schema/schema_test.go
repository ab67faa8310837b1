package schema

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The type IDs are how clients in other languages find the interfaces;
// changing one silently breaks every such client.
func TestTypeIDsArePinned(t *testing.T) {
	cases := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"Init", Init_TypeID, 0xa6ecb263711007a4},
		{"Echo", Echo_TypeID, 0xbe21fc2fe088ac94},
		{"PeerInfo", PeerInfo_TypeID, 0xfb9ceb99961155c6},
		{"LifetimeListener", LifetimeListener_TypeID, 0xff1f748128aef3b0},
		{"LifetimeSubscription", LifetimeSubscription_TypeID, 0x90c0271ab04d5bb3},
		{"LifetimeEvent", LifetimeEvent_TypeID, 0xbef9d04f22efd0dd},
		{"Subsystem", Subsystem_TypeID, 0xb6481c7bb194e30c},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s type ID = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
