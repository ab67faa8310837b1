package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers in several goroutines and a reader at the same time lose
// nothing (and -race sees no race).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 800) {
		t.Fatalf("got %d bytes, want 800", len(got))
	}
}

func TestLines(t *testing.T) {
	var b Buffer
	b.Write([]byte("a level=INFO x\nb level=WARN x\n\nc level=INFO y\n"))
	if got := b.Lines("level=INFO"); len(got) != 2 || got[0] != "a level=INFO x" || got[1] != "c level=INFO y" {
		t.Errorf("Lines(level=INFO) = %q", got)
	}
	if got := b.Lines("level=INFO", "x"); len(got) != 1 {
		t.Errorf("Lines(level=INFO, x) = %q, want one line", got)
	}
	if got := b.Lines(); len(got) != 3 {
		t.Errorf("Lines() = %q, want the 3 lines that are not empty", got)
	}
}
