package mp

import "fmt"

// DecodeDefault returns the value that def, a default or const value as
// generated code embeds it (see DefaultPtr), decodes to with c. It panics
// if def does not decode: generated code passes bytes its generator
// wrote, at package initialization or in NewS functions.
func DecodeDefault[T any](c *Codec[T], def []byte) T {
	p, err := DefaultPtr(def)
	if err == nil {
		var v T
		if v, err = c.Decode(NewDecoder(DecodeBudget(uint64(len(def))), false), p); err == nil {
			return v
		}
	}
	panic(fmt.Sprintf("mp: a generated default value does not decode: %v", err))
}
