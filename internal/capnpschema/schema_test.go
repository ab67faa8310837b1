package capnpschema

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
		{"Payout", Payout_TypeID, 0x80fbd49621ee6253},
		{"Block", Block_TypeID, 0xa2e59e38656d4d6d},
		{"Chain", Chain_TypeID, 0x931da6affa43c76c},
		{"ChainNotifications", ChainNotifications_TypeID, 0xaefc86c3b6d855d6},
		{"NotificationHandle", NotificationHandle_TypeID, 0xb179e3ecf3d5b3d1},
		{"WalletSettings", WalletSettings_TypeID, 0xc99a951e9e9a53e4},
		{"WalletTransaction", WalletTransaction_TypeID, 0x89df3fecb13d95c0},
		{"WalletLoader", WalletLoader_TypeID, 0xf53a870845b1c2c0},
		{"Wallet", Wallet_TypeID, 0x8b80b416b0fabe01},
		{"Node", Node_TypeID, 0xa3915aa9877f7c3d},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s type ID = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
