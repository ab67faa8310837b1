package mp

import (
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
)

// Release releases x if it is a proxy (as its Close does), and does
// nothing if it is a local value or nil: the one way to release a
// capability held as a value of a generated interface type.
func Release(x any) {
	if p, ok := x.(proxy); ok {
		if c := p.MPClient(); c != nil {
			c.Close()
		}
	}
}

// Retain returns a new reference to the capability x, which the caller
// releases on its own: what a method that keeps a capability parameter
// past its return holds on to. For a local value, or nil, it returns x.
func Retain[I any](x I) I {
	p, ok := any(x).(proxy)
	if !ok {
		return x
	}
	c := p.MPClient()
	if c == nil {
		return x
	}
	if d := InterfaceFor[I](); d != nil {
		return d.newProxy(newClient(c.ref(), c.connection()))
	}
	nc := newClient(c.ref(), c.connection())
	if y, ok := any(nc).(I); ok {
		return y // I is *Client, or an interface it satisfies
	}
	if t := reflect.TypeOf(x); reflect.TypeOf(nc).ConvertibleTo(t) {
		// I is a generated proxy type (type EchoClient mp.Client), as
		// held for its XPipelined methods.
		return reflect.ValueOf(nc).Convert(t).Interface().(I)
	}
	nc.Close()
	panic(fmt.Sprintf("mp: Retain of %T: no generated interface of that type", x))
}

var debugLog atomic.Pointer[slog.Logger]

// SetDebug turns on (with a logger) or off (nil) the runtime's debug
// mode: proxies remember where they were made, and one that is dropped
// without Close is logged with a warning when the runtime releases it.
// It is for development: remembering costs a stack trace per proxy.
func SetDebug(log *slog.Logger) { debugLog.Store(log) }

// tracking holds the proxies made while a LeakCheck runs, or while debug
// mode is on.
var tracking struct {
	checks atomic.Int32 // LeakChecks running
	mu     sync.Mutex
	live   map[*tracked]struct{}
	seq    uint64
}

// tracked is what the runtime remembers of one proxy.
type tracked struct {
	seq     uint64
	pcs     []uintptr
	dropped atomic.Bool // released by the runtime, not by Close
}

func trackNew() *tracked {
	if tracking.checks.Load() == 0 && debugLog.Load() == nil {
		return nil
	}
	t := &tracked{pcs: make([]uintptr, 16)}
	t.pcs = t.pcs[:runtime.Callers(3, t.pcs)]
	tracking.mu.Lock()
	tracking.seq++
	t.seq = tracking.seq
	if tracking.checks.Load() > 0 {
		if tracking.live == nil {
			tracking.live = make(map[*tracked]struct{})
		}
		tracking.live[t] = struct{}{}
	}
	tracking.mu.Unlock()
	return t
}

// done notes that the proxy was closed.
func (t *tracked) done() {
	if t == nil || t.dropped.Load() {
		return
	}
	tracking.mu.Lock()
	delete(tracking.live, t)
	tracking.mu.Unlock()
}

// where describes where the proxy was made.
func (t *tracked) where() string {
	if t == nil {
		return "(unknown: made before debug mode was on)"
	}
	var b strings.Builder
	frames := runtime.CallersFrames(t.pcs)
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "github.com/gomultiprocess/multiprocess/mp.") {
			fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		}
		if !more {
			break
		}
	}
	return b.String()
}

// dropped is what the cleanup of an unreachable proxy needs: never the
// proxy itself.
type dropped struct {
	cl    capnp.Client
	track *tracked
}

func releaseDropped(d dropped) {
	if log := debugLog.Load(); log != nil {
		log.Warn("mp: a proxy became unreachable without Close; the runtime released it", "capability", d.cl.String(), "made_at", d.track.where())
	}
	if d.track != nil {
		d.track.dropped.Store(true)
	}
	d.cl.Release()
}

// A LeakCheck reports the proxies made after it started that were not
// closed: still open, or dropped and released by the runtime. Package
// mptest's CheckLeaks wraps it for tests.
type LeakCheck struct {
	from    uint64
	stopped bool
}

// StartLeakCheck starts recording proxies.
func StartLeakCheck() *LeakCheck {
	tracking.checks.Add(1)
	tracking.mu.Lock()
	defer tracking.mu.Unlock()
	return &LeakCheck{from: tracking.seq}
}

// Leaks describes each proxy made since l started that was not closed,
// with where it was made.
func (l *LeakCheck) Leaks() []string {
	tracking.mu.Lock()
	var ts []*tracked
	for t := range tracking.live {
		if t.seq > l.from {
			ts = append(ts, t)
		}
	}
	tracking.mu.Unlock()
	var out []string
	for _, t := range ts {
		how := "not closed"
		if t.dropped.Load() {
			how = "dropped without Close (released by the garbage collector)"
		}
		out = append(out, how+"; made at:\n"+t.where())
	}
	return out
}

// Stop ends the check.
func (l *LeakCheck) Stop() {
	if l.stopped {
		return
	}
	l.stopped = true
	if tracking.checks.Add(-1) == 0 {
		tracking.mu.Lock()
		tracking.live = nil
		tracking.mu.Unlock()
	}
}
