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
// parent each time).
//
// A watch with no question left keeps watching only a context that a
// second call came back with: a context made for one call is canceled
// right after it, and a registration left on it would start a goroutine
// then (context.AfterFunc runs its function in one). Otherwise it stops
// watching, and stays in c.watches (at most maxWatches, without
// questions) to recognise the context if it comes back. Watches that
// stopped watching for certain are reused (c.freeW), so a call under a
// context of its own costs only AfterFunc's two allocations.
type ctxWatch struct {
	c    *Conn
	fire func() // w.onDone, made once per watch
	// Guarded by c.mu.
	ctx        context.Context
	stop       func() bool
	qs         []*question // open questions sent under ctx; q.widx is q's index
	uses       int         // calls sent under ctx
	registered bool        // stop is that of an AfterFunc that may still run
	cached     bool        // in c.watches
	dead       bool        // onDone has run or will: never used again
}

// maxWatches is how many watches a connection keeps in c.watches, and
// at most in c.freeW.
const maxWatches = 8

// cacheable reports whether ctx may be compared with ==: pointers only
// (every context of package context is one), as a comparison of other
// dynamic types may panic.
func cacheable(ctx context.Context) bool {
	return reflect.TypeOf(ctx).Kind() == reflect.Pointer
}

// watch has q canceled when ctx ends; ctx.Done() is not nil.
func (c *lockedConn) watch(q *question, ctx context.Context) {
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
		if n := len(c.freeW); n > 0 {
			w = c.freeW[n-1]
			c.freeW[n-1] = nil
			c.freeW = c.freeW[:n-1]
		} else {
			w = &ctxWatch{c: c.conn()}
			w.fire = w.onDone
		}
		w.ctx = ctx
		if cache {
			c.trimWatches()
			if len(c.watches) < maxWatches {
				w.cached = true
				c.watches = append(c.watches, w)
			}
		}
	}
	if !w.registered {
		w.stop = context.AfterFunc(ctx, w.fire)
		w.registered = true
	}
	w.uses++
	q.watch = w
	q.widx = len(w.qs)
	w.qs = append(w.qs, q)
}

// trimWatches makes room in c.watches if it is full: it drops watches
// without questions, keeping at most maxWatches/2 of those still
// watching. (If every watch has questions, a new one goes uncached.)
func (c *lockedConn) trimWatches() {
	if len(c.watches) < maxWatches {
		return
	}
	kept := c.watches[:0]
	idle := 0
	for _, w := range c.watches {
		if len(w.qs) > 0 || (w.registered && idle < maxWatches/2) {
			if len(w.qs) == 0 {
				idle++
			}
			kept = append(kept, w)
			continue
		}
		w.cached = false
		c.retire(w)
	}
	clear(c.watches[len(kept):])
	c.watches = kept
}

// retire stops w, which has no question and is out of c.watches, and keeps
// it for reuse if its AfterFunc can no longer run.
func (c *lockedConn) retire(w *ctxWatch) {
	if w.registered {
		w.registered = false
		if !w.stop() {
			// onDone runs or will; it only finds w empty.
			w.dead = true
		}
	}
	if w.dead {
		return
	}
	w.ctx, w.stop, w.uses = nil, nil, 0
	if len(c.freeW) < maxWatches {
		c.freeW = append(c.freeW, w)
	}
}

// unwatch takes q out of its watch.
func (c *lockedConn) unwatch(q *question) {
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
	if len(w.qs) > 0 || w.dead {
		return
	}
	switch {
	case !w.cached:
		c.retire(w)
	case w.uses < 2 && w.registered:
		// Perhaps a context made for this call: stop watching it, but
		// remember it in case it comes back.
		w.registered = false
		if !w.stop() {
			w.dead = true
			c.uncache(w)
		}
	}
}

// uncache takes w out of c.watches.
func (c *lockedConn) uncache(w *ctxWatch) {
	if !w.cached {
		return
	}
	w.cached = false
	for i, x := range c.watches {
		if x == w {
			last := len(c.watches) - 1
			copy(c.watches[i:], c.watches[i+1:])
			c.watches[last] = nil
			c.watches = c.watches[:last]
			return
		}
	}
}

// onDone cancels the questions still open under w.ctx. w is not used
// again.
func (w *ctxWatch) onDone() {
	c := w.c
	lc := c.lock()
	w.dead = true
	w.registered = false
	lc.uncache(w)
	qs := w.qs
	w.qs = nil
	ctx := w.ctx
	var cancel []*question
	for _, q := range qs {
		q.watch = nil
		if lc.cancelLocked(q) {
			cancel = append(cancel, q)
		}
	}
	lc.unlock()
	err := ctx.Err()
	for _, q := range cancel {
		q.resolve(capnp.Ptr{}, err)
	}
}

// stopWatches stops every watch at the connection's end. Watches with
// questions stop when those settle.
func (c *lockedConn) stopWatches() {
	for _, w := range c.watches {
		w.cached = false
		if len(w.qs) == 0 && w.registered {
			w.registered = false
			w.stop()
		}
	}
	clear(c.watches)
	c.watches = nil
	clear(c.freeW)
	c.freeW = nil
}
