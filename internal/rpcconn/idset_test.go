package rpcconn

import (
	"math/rand/v2"
	"testing"
)

// idSet agrees with a map over random adds and removes of small and
// large IDs.
func TestIDSet(t *testing.T) {
	var s idSet
	m := map[uint32]bool{}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		id := uint32(r.IntN(300))
		if i%7 == 0 {
			id = idSetDense - 150 + uint32(r.IntN(300)) // both sides of the bitmap's end
		}
		if i%11 == 0 {
			id = r.Uint32()
		}
		switch r.IntN(3) {
		case 0:
			s.add(id)
			m[id] = true
		case 1:
			if got, want := s.remove(id), m[id]; got != want {
				t.Fatalf("remove(%d) = %v, want %v", id, got, want)
			}
			delete(m, id)
		default:
			if got := s.has(id); got != m[id] {
				t.Fatalf("has(%d) = %v, want %v", id, got, m[id])
			}
		}
		if s.len() != len(m) {
			t.Fatalf("after %d operations: len %d, want %d", i+1, s.len(), len(m))
		}
	}
}
