package base_test

import (
	"math"
	"testing"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/base"
)

func TestNegInf(t *testing.T) {
	if !math.IsInf(base.NegInf, -1) {
		t.Errorf("NegInf = %v", base.NegInf)
	}
}
