package probe

import (
	"os"
	"testing"
)

func TestPeakRSS(t *testing.T) {
	kib, err := PeakRSSKiB(os.Getpid())
	if err != nil || kib == 0 {
		t.Fatalf("PeakRSSKiB = %d, %v", kib, err)
	}
	if _, err := PeakRSSKiB(-1); err == nil {
		t.Fatal("PeakRSSKiB of no process succeeded")
	}
}

func TestFields(t *testing.T) {
	s := Own()
	if s.PID != os.Getpid() || s.Goroutines < 1 || s.PeakGoroutines < s.Goroutines || s.Mallocs == 0 || s.PeakRSSKiB == 0 {
		t.Errorf("implausible stats %+v", s)
	}
	got, err := FromFields(s.Fields())
	if err != nil || got != s {
		t.Errorf("FromFields(Fields()) = %+v, %v; want %+v", got, err, s)
	}
	if _, err := FromFields(s.Fields()[1:]); err == nil {
		t.Error("FromFields took a short list")
	}
}
