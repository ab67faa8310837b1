package walletdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/internal/chain"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if pristineDir != "" {
			_ = os.RemoveAll(pristineDir)
		}
		os.Exit(code)
	}))
}

func TestApplyBlockExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	if _, err := Open(path); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Open of a missing wallet: %v, want ErrNotExist", err)
	}
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	if _, err := Open(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	addr, err := w.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	genesis := chain.Block{Time: time.Unix(1, 0)}
	genesis.Hash = genesis.ComputeHash()
	b1 := chain.Block{Height: 1, Parent: genesis.Hash, Time: time.Unix(2, 0), Payouts: []chain.Payout{{Address: addr, Amount: 7}, {Address: "other", Amount: 9}}}
	b1.Hash = b1.ComputeHash()

	if _, err := w.ApplyBlock(b1); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("block 1 before genesis: %v, want ErrOutOfOrder", err)
	}
	for _, b := range []chain.Block{genesis, b1} {
		if ok, err := w.ApplyBlock(b); !ok || err != nil {
			t.Fatalf("apply block %d: %v, %v", b.Height, ok, err)
		}
	}
	if ok, err := w.ApplyBlock(b1); ok || err != nil {
		t.Fatalf("applying block 1 again: %v, %v; want skipped", ok, err)
	}
	if err := w.WaitApplied(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st := w.State()
	if st.Balance != 7 || st.Next != 2 || st.LastHash != b1.Hash {
		t.Fatalf("state after reopening = %+v, want balance 7, next 2", st)
	}
	txs, err := w.Transactions()
	if err != nil || len(txs) != 1 || txs[0].Amount != 7 || txs[0].Height != 1 {
		t.Fatalf("transactions = %+v, %v", txs, err)
	}
	for h, want := range []int64{0, 7} {
		if got, err := w.BalanceAt(uint64(h)); err != nil || got != want {
			t.Fatalf("BalanceAt(%d) = %d, %v; want %d", h, got, err, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := w.WaitApplied(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied(2): %v, want a deadline error", err)
	}
}
