package mp_test

import (
	"strings"
	"testing"

	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
)

func TestLeakCheckNamesUnclosedProxies(t *testing.T) {
	ctx := testCtx(t)
	p := newPair(t, &maker{}, nil)
	l := mp.StartLeakCheck()
	defer l.Stop()
	e, err := p.maker.MakeEcho(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaks := l.Leaks()
	if len(leaks) != 1 || !strings.Contains(leaks[0], "not closed") || !strings.Contains(leaks[0], "TestLeakCheckNamesUnclosedProxies") {
		t.Fatalf("leaks with one proxy open = %q", leaks)
	}
	mp.Release(e)
	if leaks := l.Leaks(); len(leaks) != 0 {
		t.Fatalf("leaks after Release = %q", leaks)
	}
}

// Proxies made for a call's parameters belong to the call: the runtime
// releases them when the method returns.
func TestNoLeaksAcrossCallbacks(t *testing.T) {
	p := newPair(t, &maker{}, nil)
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	cb, err := p.maker.Callback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Release(cb)
	if _, err := cb.Call(ctx, 6, &callback{}); err != nil {
		t.Fatal(err)
	}
}
