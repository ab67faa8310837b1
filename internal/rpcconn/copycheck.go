package rpcconn

import (
	"capnproto.org/go/capnp/v3"
)

// checkCopy walks what a copy of s would copy (go-capnp's Struct.CopyFrom
// and SetPtr across messages), with the reading limits of s's message:
// the depth limit stops a pointer cycle, and the traversal limit a
// structure that points many times to the same parts (each path is
// copied again). A peer's message that fails it must not be copied:
// go-capnp copies recursively without either limit, so a cycle overflows
// the goroutine's stack, which kills the process. The walk consumes the
// message's read budget; it is given back after, so the copy and later
// reads count from a fresh budget.
func checkCopy(s capnp.Struct) error {
	if !s.IsValid() {
		return nil
	}
	depth := uint(DefaultDepthLimit)
	if m := s.Message(); m != nil {
		limit := m.TraverseLimit
		if limit == 0 {
			limit = DefaultTraverseLimit // go-capnp's default too
		}
		defer m.ResetReadLimit(limit)
		if m.DepthLimit != 0 {
			depth = m.DepthLimit
		}
	}
	return walkStruct(s, depth)
}

// walkStruct follows s's pointers, at most depth deep. The depth is
// counted here: go-capnp's own limit wraps around below zero through
// lists of structs (List.Struct takes one from it unchecked), so a cycle
// through a list would never end.
func walkStruct(s capnp.Struct, depth uint) error {
	if depth == 0 {
		return protoErr("content too deep to copy")
	}
	for i := uint16(0); i < s.Size().PointerCount; i++ {
		p, err := s.Ptr(i)
		if err != nil {
			return protoErr("content too deep or too large to copy: %v", err)
		}
		if err := walkPtr(p, depth-1); err != nil {
			return err
		}
	}
	return nil
}

func walkPtr(p capnp.Ptr, depth uint) error {
	if !p.IsValid() {
		return nil
	}
	if s := p.Struct(); s.IsValid() {
		return walkStruct(s, depth)
	}
	l := p.List()
	if !l.IsValid() || l.Len() == 0 {
		return nil // an interface, or an empty list
	}
	if first := l.Struct(0); !first.IsValid() || first.Size().PointerCount == 0 {
		return nil // elements without pointers
	}
	for i := 0; i < l.Len(); i++ {
		if err := walkStruct(l.Struct(i), depth); err != nil {
			return err
		}
	}
	return nil
}
