package chain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Hash identifies a block: SHA-256 over its parent's hash, height, time
// and payouts.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// HashFromBytes converts a hash received as bytes.
func HashFromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("chain: a block hash has %d bytes, not %d", len(h), len(b))
	}
	copy(h[:], b)
	return h, nil
}

// Payout is one output of a block.
type Payout struct {
	Address string
	Amount  int64 // in the smallest unit
}

// Block is one block of the chain.
type Block struct {
	Height  uint64
	Hash    Hash
	Parent  Hash // zero for the genesis block
	Time    time.Time
	Payouts []Payout
}

// ComputeHash returns the hash that b's contents give; Block.Hash is set
// to it when the block is made, and checked against it when read.
func (b *Block) ComputeHash() Hash {
	h := sha256.New()
	h.Write(b.Parent[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], b.Height)
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(b.Time.UnixNano()))
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(len(b.Payouts)))
	h.Write(n[:])
	for _, p := range b.Payouts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p.Address)))
		h.Write(n[:])
		h.Write([]byte(p.Address))
		binary.BigEndian.PutUint64(n[:], uint64(p.Amount))
		h.Write(n[:])
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

// Unit is the name of the smallest unit in which amounts are counted.
const Unit = "sat"

// FormatAmount prints an amount with its unit.
func FormatAmount(a int64) string { return fmt.Sprintf("%d %s", a, Unit) }

// CheckAddress reports whether s is an address in the form wallets make
// ("mp1" and 40 lowercase hexadecimal digits), with an error that shows
// that form.
func CheckAddress(s string) error {
	rest, ok := strings.CutPrefix(s, "mp1")
	if ok && len(rest) == 40 {
		if _, err := hex.DecodeString(rest); err == nil && strings.ToLower(rest) == rest {
			return nil
		}
	}
	return fmt.Errorf("%q is not an address: an address is mp1 followed by 40 lowercase hexadecimal digits, as 'wallet getnewaddress' prints", s)
}
