package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/std/capnp/schema"
)

// scalarBits returns the wire bits of v, a default or const value of a
// data-section type t (bools as 0 or 1, enums as their number, signed
// integers as two's complement of their width, floats as IEEE bits); 0
// for a null value.
func scalarBits(t *typ, v schema.Value) uint64 {
	if !v.IsValid() {
		return 0
	}
	switch v.Which() {
	case schema.Value_Which_bool:
		if v.Bool() {
			return 1
		}
		return 0
	case schema.Value_Which_int8:
		return uint64(uint8(v.Int8()))
	case schema.Value_Which_int16:
		return uint64(uint16(v.Int16()))
	case schema.Value_Which_int32:
		return uint64(uint32(v.Int32()))
	case schema.Value_Which_int64:
		return uint64(v.Int64())
	case schema.Value_Which_uint8:
		return uint64(v.Uint8())
	case schema.Value_Which_uint16:
		return uint64(v.Uint16())
	case schema.Value_Which_uint32:
		return uint64(v.Uint32())
	case schema.Value_Which_uint64:
		return v.Uint64()
	case schema.Value_Which_float32:
		return uint64(math.Float32bits(v.Float32()))
	case schema.Value_Which_float64:
		return math.Float64bits(v.Float64())
	case schema.Value_Which_enum:
		return uint64(v.Enum())
	}
	return 0
}

// scalarLiteral returns the Go expression of the value whose wire bits
// are bits, for a data-section type t.
func (fg *fileGen) scalarLiteral(t *typ, bits uint64) string {
	switch t.kind {
	case kBool:
		return strconv.FormatBool(bits != 0)
	case kInt8:
		return strconv.FormatInt(int64(int8(bits)), 10)
	case kInt16:
		return strconv.FormatInt(int64(int16(bits)), 10)
	case kInt32:
		return strconv.FormatInt(int64(int32(bits)), 10)
	case kInt64:
		return strconv.FormatInt(int64(bits), 10)
	case kUint8, kUint16, kUint32, kUint64:
		return strconv.FormatUint(bits, 10)
	case kFloat32:
		f := math.Float32frombits(uint32(bits))
		if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) || f == 0 && math.Signbit(float64(f)) {
			fg.useMath()
			return fmt.Sprintf("math.Float32frombits(%#x)", bits)
		}
		return floatLiteral(strconv.FormatFloat(float64(f), 'g', -1, 32))
	case kFloat64:
		f := math.Float64frombits(bits)
		if math.IsInf(f, 0) || math.IsNaN(f) || f == 0 && math.Signbit(f) {
			fg.useMath()
			return fmt.Sprintf("math.Float64frombits(%#x)", bits)
		}
		return floatLiteral(strconv.FormatFloat(f, 'g', -1, 64))
	case kEnum:
		d := fg.decl(t.node)
		if int(bits) < len(d.enumerants) {
			return fg.qualName(t.node, d.enumerants[bits].name)
		}
		return fmt.Sprintf("%s(%d)", fg.qual(t.node), bits)
	}
	return "0"
}

// floatLiteral makes a formatted float read as a float constant.
func floatLiteral(s string) string {
	if strings.ContainsAny(s, ".eEnN") {
		return s
	}
	return s + ".0"
}

// isConstFloat reports whether a float value can be a Go constant.
func isConstFloat(t *typ, bits uint64) bool {
	var f float64
	if t.kind == kFloat32 {
		f = float64(math.Float32frombits(uint32(bits)))
	} else {
		f = math.Float64frombits(bits)
	}
	return !math.IsInf(f, 0) && !math.IsNaN(f) && !(f == 0 && math.Signbit(f))
}

// defaultPtr returns the pointer of a pointer default or const value v
// (null if there is none).
func defaultPtr(t *typ, v schema.Value) (capnp.Ptr, error) {
	if !v.IsValid() {
		return capnp.Ptr{}, nil
	}
	switch v.Which() {
	case schema.Value_Which_list:
		return v.List()
	case schema.Value_Which_structValue:
		return v.StructValue()
	case schema.Value_Which_anyPointer:
		return v.AnyPointer()
	case schema.Value_Which_interface:
		return capnp.Ptr{}, nil
	}
	return capnp.Ptr{}, fmt.Errorf("a %v value for a pointer type", v.Which())
}

// bytesLiteral formats b as a []byte literal.
func bytesLiteral(b []byte) string {
	var sb strings.Builder
	sb.WriteString("[]byte{")
	for i, c := range b {
		if i > 0 {
			if i%16 == 0 {
				sb.WriteString(",\n")
			} else {
				sb.WriteString(", ")
			}
		}
		fmt.Fprintf(&sb, "0x%02x", c)
	}
	if len(b) > 16 {
		sb.WriteString(",\n")
	}
	sb.WriteString("}")
	return sb.String()
}
