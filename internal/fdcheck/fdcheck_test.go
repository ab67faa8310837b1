package fdcheck

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose cleanups run when the test says, and
// whose errors are kept rather than reported.
type recorder struct {
	testing.TB
	cleanups []func()
	errors   []string
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func pipe(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	return r, w
}

func TestCheck(t *testing.T) {
	// A leak is reported, naming the descriptors.
	rec := &recorder{TB: t}
	Check(rec, 20*time.Millisecond)
	r, w := pipe(t)
	rec.end()
	r.Close()
	w.Close()
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "pipe:[") {
		t.Errorf("leaked pipe: errors %q, want one naming the pipe", rec.errors)
	}

	// A descriptor closed while Check waits is no leak.
	rec = &recorder{TB: t}
	Check(rec, 5*time.Second)
	lr, lw := pipe(t)
	closed := make(chan struct{})
	time.AfterFunc(50*time.Millisecond, func() { lr.Close(); lw.Close(); close(closed) })
	rec.end()
	<-closed
	if len(rec.errors) != 0 {
		t.Errorf("pipe closed late: errors %q", rec.errors)
	}

	// Check accepts fewer descriptors at the end; CheckSame does not.
	r, w = pipe(t)
	rec = &recorder{TB: t}
	Check(rec, 20*time.Millisecond)
	same := &recorder{TB: t}
	CheckSame(same, 20*time.Millisecond)
	r.Close()
	w.Close()
	rec.end()
	same.end()
	if len(rec.errors) != 0 {
		t.Errorf("Check, descriptors closed: errors %q", rec.errors)
	}
	if len(same.errors) != 1 || !strings.Contains(same.errors[0], "gone: ") {
		t.Errorf("CheckSame, descriptors closed: errors %q, want one naming them", same.errors)
	}
}

func TestCount(t *testing.T) {
	before := Count(t)
	r, w := pipe(t)
	defer r.Close()
	defer w.Close()
	if n := Count(t); n != before+2 {
		t.Errorf("Count with a pipe open = %d, want %d", n, before+2)
	}
}
