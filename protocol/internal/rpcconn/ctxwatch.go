package rpcconn

import (
	"context"
	"reflect"

	"capnproto.org/go/capnp/v3"
)

// A ctxWatch cancels the questions sent under one context when that
// context ends. Calls made one after another under the same context (a
// program's usual way) share one watch: context.AfterFunc registers once
// per context, not once per call (it costs two allocations, and the
// closure naming the question a third, plus a lock of the context's
// parent each time). A watch is kept, with no question, for the next
// call under its context, up to maxIdleWatches per connection; the
// connection's end stops them all.
type ctxWatch struct {
	c    *Conn
	ctx  context.Context
	stop func() bool
	fire func() // w.onDone, made once per watch
	// Guarded by c.mu.
	qs     []*question // open questions sent under ctx; q.widx is q's index
	cached bool        // in c.watches
	fired  bool        // onDone has run or is running
}

// maxIdleWatches is how many watches without questions a connection
// keeps for reuse.
const maxIdleWatches = 8

// cacheable reports whether ctx may be compared with ==: pointers only
// (every context of package context is one), as a comparison of other
// dynamic types may panic.
func cacheable(ctx context.Context) bool {
	return reflect.TypeOf(ctx).Kind() == reflect.Pointer
}

// watch has q canceled when ctx ends; ctx.Done() is not nil. The caller
// holds c.mu.
func (c *Conn) watch(q *question, ctx context.Context) {
	var w *ctxWatch
	cache := cacheable(ctx)
	if cache {
		for _, x := range c.watches {
			if x.ctx == ctx {
				w = x
				break
			}
		}
	}
	if w == nil {
		w = &ctxWatch{c: c, ctx: ctx}
		w.fire = w.onDone
		w.stop = context.AfterFunc(ctx, w.fire)
		if cache {
			c.trimWatches()
			if len(c.watches) < maxIdleWatches {
				w.cached = true
				c.watches = append(c.watches, w)
			}
		}
	}
	q.watch = w
	q.widx = len(w.qs)
	w.qs = append(w.qs, q)
}

// trimWatches makes room in c.watches by dropping watches without
// questions; the caller holds c.mu.
func (c *Conn) trimWatches() {
	if len(c.watches) < maxIdleWatches {
		return
	}
	kept := c.watches[:0]
	for _, w := range c.watches {
		if len(w.qs) == 0 && len(kept) < maxIdleWatches/2 || len(w.qs) > 0 {
			kept = append(kept, w)
			continue
		}
		w.cached = false
		w.stop()
	}
	clear(c.watches[len(kept):])
	c.watches = kept
}

// unwatch takes q out of its watch; the caller holds c.mu.
func (c *Conn) unwatch(q *question) {
	w := q.watch
	if w == nil {
		return
	}
	q.watch = nil
	last := len(w.qs) - 1
	if q.widx <= last && w.qs[q.widx] == q {
		w.qs[q.widx] = w.qs[last]
		w.qs[q.widx].widx = q.widx
		w.qs[last] = nil
		w.qs = w.qs[:last]
	}
	if len(w.qs) == 0 && !w.cached && !w.fired {
		w.fired = true
		w.stop()
	}
}

// onDone cancels the questions still open under w.ctx.
func (w *ctxWatch) onDone() {
	c := w.c
	c.mu.Lock()
	w.fired = true
	if w.cached {
		w.cached = false
		for i, x := range c.watches {
			if x == w {
				c.watches = append(c.watches[:i], c.watches[i+1:]...)
				c.watches[len(c.watches):cap(c.watches)][0] = nil
				break
			}
		}
	}
	qs := w.qs
	w.qs = nil
	var cancel []*question
	for _, q := range qs {
		q.watch = nil
		if c.cancelLocked(q) {
			cancel = append(cancel, q)
		}
	}
	c.mu.Unlock()
	err := w.ctx.Err()
	for _, q := range cancel {
		q.resolve(capnp.Ptr{}, err)
	}
}

// stopWatches stops every watch at the connection's end; the caller
// holds c.mu.
func (c *Conn) stopWatches() {
	for _, w := range c.watches {
		w.cached = false
		if len(w.qs) == 0 && !w.fired {
			w.fired = true
			w.stop()
		}
	}
	clear(c.watches)
	c.watches = nil
}
