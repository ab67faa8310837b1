// Package canon encodes Cap'n Proto values in canonical form: mpgen
// embeds default values so, and tests compare messages so.
package canon

import (
	"encoding/binary"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"
)

// Encode returns the canonical encoding of p (Cap'n Proto's: one segment
// without segment table, its first word the root pointer, objects in
// preorder, structs' trailing zero data words and null pointers cut):
// the bytes generated code embeds for a default value and mp.DefaultPtr
// reads. (go-capnp's Canonicalize mislays the tag of composite lists.)
func Encode(p capnp.Ptr) ([]byte, error) {
	// Copy p into one segment first: go-capnp resolves far pointers and
	// other segments.
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	if err := msg.SetRoot(p); err != nil {
		return nil, err
	}
	src := seg.Data()
	c := &canon{src: src, out: make([]byte, 8)}
	if err := c.copyPtr(0, 0, 0); err != nil {
		return nil, err
	}
	return c.out, nil
}

// canon copies objects from src, one segment, into out, canonically.
type canon struct {
	src, out []byte
	steps    int
}

var errBadPointer = errors.New("canon: malformed message")

func (c *canon) srcWord(i int) (uint64, error) {
	if i < 0 || (i+1)*8 > len(c.src) {
		return 0, errBadPointer
	}
	return binary.LittleEndian.Uint64(c.src[i*8:]), nil
}

// alloc appends n zero words to out and returns the index of the first.
func (c *canon) alloc(n int) int {
	i := len(c.out) / 8
	c.out = append(c.out, make([]byte, n*8)...)
	return i
}

func (c *canon) put(i int, w uint64) { binary.LittleEndian.PutUint64(c.out[i*8:], w) }

// target returns the word a pointer at index at points to.
func target(at int, w uint64) int { return at + 1 + int(int32(uint32(w))>>2) }

// offsetBits encodes the offset from a pointer at index at to word to.
func offsetBits(at, to int) uint64 { return uint64(uint32(int32(to-at-1) << 2)) }

// copyPtr copies the object that the pointer at src word from points to,
// and writes the pointer to the copy at out word to. depth bounds the
// recursion.
func (c *canon) copyPtr(from, to, depth int) error {
	if c.steps++; c.steps > 1<<20 || depth > 64 {
		return errBadPointer
	}
	w, err := c.srcWord(from)
	if err != nil {
		return err
	}
	if w == 0 {
		return nil
	}
	switch w & 3 {
	case 0: // struct
		dw, pw := int(uint16(w>>32)), int(uint16(w>>48))
		return c.copyStruct(target(from, w), dw, pw, to, depth)
	case 1: // list
		return c.copyList(from, w, to, depth)
	case 3: // capability: copied as it is
		c.put(to, w)
		return nil
	}
	return fmt.Errorf("%w: far pointer in one segment", errBadPointer)
}

// trimmed returns the words of a struct's sections that canonical form
// keeps: data up to the last non-zero word, pointers up to the last
// non-null one.
func (c *canon) trimmed(at, dw, pw int) (int, int, error) {
	ptrs := at + dw
	for pw > 0 {
		w, err := c.srcWord(ptrs + pw - 1)
		if err != nil {
			return 0, 0, err
		}
		if w != 0 {
			break
		}
		pw--
	}
	for dw > 0 {
		w, err := c.srcWord(at + dw - 1)
		if err != nil {
			return 0, 0, err
		}
		if w != 0 {
			break
		}
		dw--
	}
	return dw, pw, nil
}

func (c *canon) copyStruct(at, dw, pw, to, depth int) error {
	srcDW := dw
	dw, pw, err := c.trimmed(at, dw, pw)
	if err != nil {
		return err
	}
	if dw == 0 && pw == 0 {
		// A struct of no words points to itself, unlike null.
		c.put(to, uint64(0xfffffffc))
		return nil
	}
	dst := c.alloc(dw + pw)
	c.put(to, offsetBits(to, dst)|uint64(dw)<<32|uint64(pw)<<48)
	return c.fillStruct(at, srcDW, dw, pw, dst, depth)
}

// fillStruct copies dw data words and pw pointers of the struct at src
// word at (whose data section has srcDW words) into out at dst.
func (c *canon) fillStruct(at, srcDW, dw, pw, dst, depth int) error {
	for i := 0; i < dw; i++ {
		w, err := c.srcWord(at + i)
		if err != nil {
			return err
		}
		c.put(dst+i, w)
	}
	for i := 0; i < pw; i++ {
		if err := c.copyPtr(at+srcDW+i, dst+dw+i, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (c *canon) copyList(from int, w uint64, to, depth int) error {
	at := target(from, w)
	size := int(w>>32) & 7
	n := int(w >> 35)
	switch size {
	case 7: // composite: n is the words of the elements; the tag has the count
		tag, err := c.srcWord(at)
		if err != nil {
			return err
		}
		count := int(uint32(tag) >> 2)
		dw, pw := int(uint16(tag>>32)), int(uint16(tag>>48))
		if count*(dw+pw) > n {
			return errBadPointer
		}
		// Every element gets the largest trimmed size among them.
		mdw, mpw := 0, 0
		for i := 0; i < count; i++ {
			edw, epw, err := c.trimmed(at+1+i*(dw+pw), dw, pw)
			if err != nil {
				return err
			}
			mdw, mpw = max(mdw, edw), max(mpw, epw)
		}
		dst := c.alloc(1 + count*(mdw+mpw))
		c.put(to, offsetBits(to, dst)|1|7<<32|uint64(count*(mdw+mpw))<<35)
		c.put(dst, uint64(count)<<2|uint64(mdw)<<32|uint64(mpw)<<48)
		for i := 0; i < count; i++ {
			if err := c.fillStruct(at+1+i*(dw+pw), dw, mdw, mpw, dst+1+i*(mdw+mpw), depth); err != nil {
				return err
			}
		}
		return nil
	case 6: // pointers
		dst := c.alloc(n)
		c.put(to, offsetBits(to, dst)|1|6<<32|uint64(n)<<35)
		for i := 0; i < n; i++ {
			if err := c.copyPtr(at+i, dst+i, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	bits := [...]int{0, 1, 8, 16, 32, 64}[size] * n
	words := (bits + 63) / 64
	if _, err := c.srcWord(at + words - 1); words > 0 && err != nil {
		return err
	}
	dst := c.alloc(words)
	c.put(to, offsetBits(to, dst)|1|uint64(size)<<32|uint64(n)<<35)
	copy(c.out[dst*8:], c.src[at*8:at*8+(bits+7)/8])
	return nil
}
