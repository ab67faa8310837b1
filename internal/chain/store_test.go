package chain

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if pristineDir != "" {
			_ = os.RemoveAll(pristineDir)
		}
		os.Exit(code)
	}))
}

func TestHashCoversContents(t *testing.T) {
	b := Block{Height: 1, Time: time.Unix(10, 0), Payouts: []Payout{{"a", 5}}}
	h := b.ComputeHash()
	for name, change := range map[string]func(*Block){
		"height":  func(b *Block) { b.Height++ },
		"time":    func(b *Block) { b.Time = b.Time.Add(time.Nanosecond) },
		"parent":  func(b *Block) { b.Parent[0] ^= 1 },
		"address": func(b *Block) { b.Payouts = []Payout{{"b", 5}} },
		"amount":  func(b *Block) { b.Payouts = []Payout{{"a", 6}} },
		"split":   func(b *Block) { b.Payouts = []Payout{{"a", 5}, {"", 0}} },
	} {
		c := b
		c.Payouts = append([]Payout(nil), b.Payouts...)
		change(&c)
		if c.ComputeHash() == h {
			t.Errorf("changing the %s leaves the hash unchanged", name)
		}
	}
}

func TestStorePersistsAndFollows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chain.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	genesis := s.Tip()
	if genesis.Height != 0 || genesis.Hash != genesis.ComputeHash() {
		t.Fatalf("genesis = %+v", genesis)
	}
	if _, err := Open(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	b1, err := s.Append(time.Now(), []Payout{{"a", Reward}})
	if err != nil {
		t.Fatal(err)
	}
	if b1.Height != 1 || b1.Parent != genesis.Hash {
		t.Fatalf("block 1 = %+v", b1)
	}
	if got, err := s.BlockByHash(b1.Hash); err != nil || got.Height != 1 {
		t.Fatalf("BlockByHash = %+v, %v", got, err)
	}
	if _, err := s.BlockAt(2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BlockAt(2): %v, want ErrNotFound", err)
	}

	// Follow from 1 gets block 1 at once, then 2 when it is appended.
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan uint64, 4)
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(ctx, 1, func(_ context.Context, b Block) error {
			got <- b.Height
			return nil
		})
	}()
	if h := <-got; h != 1 {
		t.Fatalf("first followed block %d, want 1", h)
	}
	if _, err := s.Append(time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != 2 {
		t.Fatalf("second followed block %d, want 2", h)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow ended with %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if tip := s.Tip(); tip.Height != 2 {
		t.Fatalf("tip after reopening = %d, want 2", tip.Height)
	}
}

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"mp1" + strings.Repeat("0a", 20), true},
		{"mp1" + strings.Repeat("0A", 20), false},
		{"mp1" + strings.Repeat("0a", 19), false},
		{"garbage", false},
		{"", false},
		{"mp2" + strings.Repeat("0a", 20), false},
		{"mp1" + strings.Repeat("zz", 20), false},
	} {
		err := CheckAddress(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("CheckAddress(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "mp1 followed by 40 lowercase hexadecimal digits") {
			t.Errorf("CheckAddress(%q) error %q does not show the form", tc.addr, err)
		}
	}
}
