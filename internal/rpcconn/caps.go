package rpcconn

import (
	"context"
	"math"
	"strconv"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// An export is a local capability the peer holds references to.
type export struct {
	id       uint32
	client   capnp.Client
	wireRefs uint32 // references the peer holds
	md       *capnp.Metadata

	// snap is client's hook, for delivering calls without a snapshot
	// (an allocation) per call: taken at the first call if the client
	// is no promise (whose hook may change as it resolves). busy counts
	// the deliveries using it; once the export is dropped, the last of
	// them releases it (drop does if there is none).
	snap   capnp.ClientSnapshot
	noSnap bool // client was a promise at the first call
	busy   int
	dead   bool
}

// drop notes that the peer holds no more references to e; the caller
// releases e.client after unlocking. The snapshot is released here if no
// delivery uses it: never the hook's last reference, as e.client holds one
// until then.
func (e *export) drop(c *lockedConn) {
	e.forget(c)
	e.dead = true
	if e.busy == 0 && e.snap.IsValid() {
		e.snap.Release()
		e.snap = capnp.ClientSnapshot{}
	}
}

// deliverySnapshot returns the hook to deliver a call to e through, and
// whether it is e's own (then doneDelivering must follow the delivery)
// rather than a new snapshot for the caller to release.
func (e *export) deliverySnapshot(lc *lockedConn) (capnp.ClientSnapshot, bool) {
	if !e.snap.IsValid() && !e.noSnap {
		s := e.client.Snapshot()
		if !s.IsValid() || s.IsPromise() {
			e.noSnap = true
			return s, false
		}
		e.snap = s
	}
	if e.snap.IsValid() {
		e.busy++
		return e.snap, true
	}
	return e.client.Snapshot(), false
}

// doneDelivering ends a delivery through e.snap; the caller releases the
// snapshot returned, if valid, after unlocking.
func (e *export) doneDelivering(lc *lockedConn) capnp.ClientSnapshot {
	e.busy--
	if e.busy == 0 && e.dead {
		s := e.snap
		e.snap = capnp.ClientSnapshot{}
		return s
	}
	return capnp.ClientSnapshot{}
}

type exportKey struct{ c *Conn }

// forget removes the export's entry from the capability's metadata.
func (e *export) forget(c *lockedConn) {
	e.md.Lock()
	e.md.Delete(exportKey{c.conn()})
	e.md.Unlock()
}

// export returns the export with id, or nil.
func (c *lockedConn) export(id uint32) *export {
	if uint64(id) >= uint64(len(c.exports)) {
		return nil
	}
	return c.exports[id]
}

// releaseExport drops count of the peer's references to export id and
// returns the client to release (after unlocking) if none are left.
func (c *lockedConn) releaseExport(id, count uint32) (capnp.Client, error) {
	e := c.export(id)
	if e == nil {
		return capnp.Client{}, protoErr("release of unknown export %d", id)
	}
	if count > e.wireRefs {
		return capnp.Client{}, protoErr("release of %d references to export %d, which has %d", count, id, e.wireRefs)
	}
	e.wireRefs -= count
	if e.wireRefs > 0 {
		return capnp.Client{}, nil
	}
	c.exports[id] = nil
	c.freeE = append(c.freeE, id)
	e.drop(c)
	return e.client, nil
}

// describeCaps fills payload's cap table from table, exporting what needs
// it, and returns the export IDs it counted a reference on. Snapshots to
// release go to *release.
func (c *lockedConn) describeCaps(payload rpccp.Payload, table *capnp.CapTable, release *[]capnp.Client) ([]uint32, error) {
	n := table.Len()
	if n == 0 {
		return nil, nil
	}
	l, err := payload.NewCapTable(int32(n))
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for i := 0; i < n; i++ {
		if id, ok := c.describe(l.At(i), table.At(i)); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// describe writes the descriptor for cl, exporting it if it is not the
// peer's own. It reports the export ID if one was counted.
func (c *lockedConn) describe(d rpccp.CapDescriptor, cl capnp.Client) (uint32, bool) {
	if !cl.IsValid() {
		d.SetNone()
		return 0, false
	}
	snap := cl.Snapshot()
	defer snap.Release() // cl still holds a reference: no hook shuts down here
	switch v := snap.Brand().Value.(type) {
	case *importClient:
		if v.c == c.conn() && !v.gone {
			d.SetReceiverHosted(v.id)
			return 0, false
		}
	case capnp.PipelineClient:
		if q := c.questionFor(v.Answer()); q != nil {
			ra, err := d.NewReceiverAnswer()
			if err == nil {
				ra.SetQuestionId(q.id)
				if t := v.Transform(); len(t) > 0 {
					ops, err := ra.NewTransform(int32(len(t)))
					if err == nil {
						for i, op := range t {
							ops.At(i).SetGetPointerField(op.Field)
						}
					}
				}
				return 0, false
			}
		}
	}
	md := snap.Metadata()
	md.Lock()
	v, ok := md.Get(exportKey{c.conn()})
	md.Unlock()
	if ok {
		if e := c.export(v.(uint32)); e != nil && e.wireRefs < math.MaxUint32 {
			e.wireRefs++
			d.SetSenderHosted(e.id)
			return e.id, true
		}
	}
	e := &export{client: cl.AddRef(), wireRefs: 1, md: md}
	if n := len(c.freeE); n > 0 {
		e.id = c.freeE[n-1]
		c.freeE = c.freeE[:n-1]
		c.exports[e.id] = e
	} else {
		e.id = uint32(len(c.exports))
		c.exports = append(c.exports, e)
	}
	md.Lock()
	md.Put(exportKey{c.conn()}, e.id)
	md.Unlock()
	d.SetSenderHosted(e.id)
	return e.id, true
}

// importCaps turns received cap descriptors into clients. On error, the
// clients made so far are returned for release.
func (c *lockedConn) importCaps(l rpccp.CapDescriptor_List, release *[]capnp.Client) ([]capnp.Client, error) {
	if l.Len() == 0 {
		return nil, nil
	}
	caps := make([]capnp.Client, 0, l.Len())
	for i := 0; i < l.Len(); i++ {
		cl, err := c.importCap(l.At(i))
		if err != nil {
			return caps, err
		}
		caps = append(caps, cl)
	}
	return caps, nil
}

func (c *lockedConn) importCap(d rpccp.CapDescriptor) (capnp.Client, error) {
	switch d.Which() {
	case rpccp.CapDescriptor_Which_none:
		return capnp.Client{}, nil
	case rpccp.CapDescriptor_Which_senderHosted:
		return c.importFor(d.SenderHosted(), false)
	case rpccp.CapDescriptor_Which_senderPromise:
		return c.importFor(d.SenderPromise(), true)
	case rpccp.CapDescriptor_Which_receiverHosted:
		id := d.ReceiverHosted()
		e := c.export(id)
		if e == nil {
			return capnp.Client{}, protoErr("receiverHosted names unknown export %d", id)
		}
		return e.client.AddRef(), nil
	case rpccp.CapDescriptor_Which_receiverAnswer:
		if !d.HasReceiverAnswer() {
			return capnp.Client{}, protoErr("null receiverAnswer")
		}
		pa, err := d.ReceiverAnswer()
		if err != nil {
			return capnp.Client{}, protoErr("unreadable receiverAnswer: %v", err)
		}
		t, err := parseTransform(pa)
		if err != nil {
			return capnp.Client{}, err
		}
		a := c.answers[pa.QuestionId()]
		if a == nil {
			return capnp.Client{}, protoErr("receiverAnswer names unknown question %d", pa.QuestionId())
		}
		if a.state == aRunning {
			h := &answerHook{a: a, transform: t, done: make(chan struct{})}
			cl, r := capnp.NewPromisedClient(h)
			h.resolver = r
			a.waiters = append(a.waiters, h)
			return cl, nil
		}
		cl, err := a.target(c, t)
		if err != nil {
			return capnp.ErrorClient(err), nil
		}
		return cl, nil
	default:
		return capnp.Client{}, protoErr("unsupported cap descriptor %v", d.Which())
	}
}

// importFor returns a new reference to import id, creating the import if
// needed.
func (c *lockedConn) importFor(id uint32, promise bool) (capnp.Client, error) {
	if h := c.imports[id]; h != nil {
		if cl, ok := h.weak.AddRef(); ok {
			h.wireRefs++
			return cl, nil
		}
		// The last reference is going; its Shutdown will release only
		// its own wire references. This one starts afresh.
	}
	if len(c.imports) >= c.lim.maxTable {
		return capnp.Client{}, protoErr("more than %d imports", c.lim.maxTable)
	}
	delete(c.deadPromises, id) // the peer reuses the ID: no Resolve pending for the old one
	h := &importClient{c: c.conn(), id: id, wireRefs: 1, promise: promise}
	var cl capnp.Client
	if promise {
		cl, h.resolver = capnp.NewPromisedClient(h)
	} else {
		cl = capnp.NewClient(h)
	}
	h.weak = cl.WeakRef()
	c.imports[id] = h
	return cl, nil
}

// An importClient is a capability hosted by the peer.
type importClient struct {
	c        *Conn
	id       uint32
	weak     capnp.WeakClient
	resolver capnp.Resolver[capnp.Client] // promise imports only
	tmpl     tmplSlot                     // the last method called directly (callmsg.go)

	// Guarded by c.mu.
	wireRefs uint32
	promise  bool
	resolved bool
	called   bool // a call was sent to it (a promise's resolution may need an embargo)
	gone     bool // out of the table: released, or the conn ended
}

func (h *importClient) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	_, ans, rel := h.c.sendCall(ctx, callTarget{imp: h}, s, true)
	return ans, rel
}

func (h *importClient) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	return h.c.forward(ctx, callTarget{imp: h}, r)
}

func (h *importClient) Brand() capnp.Brand { return capnp.Brand{Value: h} }

func (h *importClient) String() string {
	return "rpcconn import " + strconv.FormatUint(uint64(h.id), 10)
}

// Shutdown sends the Release for the references this import received.
func (h *importClient) Shutdown() {
	c := h.c
	lc := c.lock()
	defer lc.unlock()
	if h.gone || c.closing {
		h.gone = true
		return
	}
	h.gone = true
	if c.imports[h.id] == h {
		delete(c.imports, h.id)
		if h.promise && !h.resolved {
			// Its Resolve may cross our Release: expect it.
			if len(c.deadPromises) < c.lim.maxTable {
				c.deadPromises[h.id] = true
			} else {
				c.deadOverflow = true
			}
		}
	}
	msg, root := newMessage()
	r, _ := root.NewRelease()
	r.SetId(h.id)
	r.SetReferenceCount(h.wireRefs)
	c.send(msg, nil)
}
