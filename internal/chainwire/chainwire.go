package chainwire

import (
	"errors"
	"fmt"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/schema"
)

// MaxPayouts bounds the payouts a received block may carry.
const MaxPayouts = 1 << 16

// ToWire returns b as the schema's Block.
func ToWire(b chain.Block) *schema.Block {
	w := &schema.Block{
		Height:       b.Height,
		Hash:         b.Hash[:],
		ParentHash:   b.Parent[:],
		TimeUnixNano: b.Time.UnixNano(),
		Payouts:      make([]schema.Payout, len(b.Payouts)),
	}
	for i, p := range b.Payouts {
		w.Payouts[i] = schema.Payout{Address: p.Address, Amount: p.Amount}
	}
	return w
}

// FromWire checks a received block, that its hash matches its contents
// among other things, and returns it.
func FromWire(w *schema.Block) (chain.Block, error) {
	var b chain.Block
	if w == nil {
		return b, errors.New("no block")
	}
	b.Height = w.Height
	b.Time = time.Unix(0, w.TimeUnixNano)
	var err error
	if b.Hash, err = chain.HashFromBytes(w.Hash); err != nil {
		return b, err
	}
	if b.Parent, err = chain.HashFromBytes(w.ParentHash); err != nil {
		return b, err
	}
	if len(w.Payouts) > MaxPayouts {
		return b, fmt.Errorf("block %d has %d payouts, over the limit of %d", b.Height, len(w.Payouts), MaxPayouts)
	}
	b.Payouts = make([]chain.Payout, len(w.Payouts))
	for i, p := range w.Payouts {
		b.Payouts[i] = chain.Payout{Address: p.Address, Amount: p.Amount}
	}
	if b.ComputeHash() != b.Hash {
		return b, fmt.Errorf("block %d: hash %s does not match its contents", b.Height, b.Hash)
	}
	return b, nil
}
