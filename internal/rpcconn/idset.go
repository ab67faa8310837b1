package rpcconn

// An idSet is a set of 32-bit IDs, such as a peer's question IDs: a
// bitmap for the small ones, which peers reuse (ours and C++'s number
// their questions from 0 and take freed IDs first), and a map for the
// rest. Adding and removing a small ID costs no hashing: the set changes
// on every call a peer makes (Conn.finishOptional).
type idSet struct {
	bits []uint64
	big  map[uint32]struct{}
	n    int
}

// idSetDense is where the bitmap ends: 8 KiB of bits at most.
const idSetDense = 1 << 16

func (s *idSet) add(id uint32) {
	if id < idSetDense {
		w := int(id / 64)
		if w >= len(s.bits) {
			s.bits = append(s.bits, make([]uint64, w+1-len(s.bits))...)
		}
		if s.bits[w]&(1<<(id%64)) == 0 {
			s.bits[w] |= 1 << (id % 64)
			s.n++
		}
		return
	}
	if s.big == nil {
		s.big = make(map[uint32]struct{})
	}
	if _, ok := s.big[id]; !ok {
		s.big[id] = struct{}{}
		s.n++
	}
}

func (s *idSet) has(id uint32) bool {
	if id < idSetDense {
		w := int(id / 64)
		return w < len(s.bits) && s.bits[w]&(1<<(id%64)) != 0
	}
	_, ok := s.big[id]
	return ok
}

// remove takes id out and reports whether it was in.
func (s *idSet) remove(id uint32) bool {
	if id < idSetDense {
		w := int(id / 64)
		if w >= len(s.bits) || s.bits[w]&(1<<(id%64)) == 0 {
			return false
		}
		s.bits[w] &^= 1 << (id % 64)
		s.n--
		return true
	}
	if _, ok := s.big[id]; !ok {
		return false
	}
	delete(s.big, id)
	s.n--
	return true
}

func (s *idSet) len() int { return s.n }
