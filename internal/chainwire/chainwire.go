package chainwire

import (
	"fmt"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chain"
)

// MaxPayouts bounds the payouts a received block may carry.
const MaxPayouts = 1 << 16

// WriteBlock fills w with b.
func WriteBlock(w schema.Block, b chain.Block) error {
	w.SetHeight(b.Height)
	w.SetTimeUnixNano(b.Time.UnixNano())
	if err := w.SetHash(b.Hash[:]); err != nil {
		return err
	}
	if err := w.SetParentHash(b.Parent[:]); err != nil {
		return err
	}
	ps, err := w.NewPayouts(int32(len(b.Payouts)))
	if err != nil {
		return err
	}
	for i, p := range b.Payouts {
		e := ps.At(i)
		e.SetAmount(p.Amount)
		if err := e.SetAddress(p.Address); err != nil {
			return err
		}
	}
	return nil
}

// ReadBlock decodes a received block and checks that its hash matches its
// contents.
func ReadBlock(r schema.Block) (chain.Block, error) {
	var b chain.Block
	b.Height = r.Height()
	b.Time = time.Unix(0, r.TimeUnixNano())
	h, err := r.Hash()
	if err != nil {
		return b, fmt.Errorf("read block hash: %w", err)
	}
	if b.Hash, err = chain.HashFromBytes(h); err != nil {
		return b, err
	}
	p, err := r.ParentHash()
	if err != nil {
		return b, fmt.Errorf("read parent hash: %w", err)
	}
	if b.Parent, err = chain.HashFromBytes(p); err != nil {
		return b, err
	}
	ps, err := r.Payouts()
	if err != nil {
		return b, fmt.Errorf("read payouts: %w", err)
	}
	if ps.Len() > MaxPayouts {
		return b, fmt.Errorf("block %d has %d payouts, over the limit of %d", b.Height, ps.Len(), MaxPayouts)
	}
	for i := 0; i < ps.Len(); i++ {
		e := ps.At(i)
		addr, err := e.Address()
		if err != nil {
			return b, fmt.Errorf("read payout address: %w", err)
		}
		b.Payouts = append(b.Payouts, chain.Payout{Address: addr, Amount: e.Amount()})
	}
	if b.ComputeHash() != b.Hash {
		return b, fmt.Errorf("block %d: hash %s does not match its contents", b.Height, b.Hash)
	}
	return b, nil
}
