package rpcconn

// A lockedConn is a Conn whose mutex c.mu is held: the connection's
// tables (questions, answers, exports, imports, embargoes, watches) and
// their counters. Methods that need c.mu held are defined on it, and the
// only way to get one is Conn.lock, so that calling such a method without
// the lock does not compile (go-capnp's rpc.go does the same with its
// lockedConn). A lockedConn is not kept past its unlock; methods of other
// types that need c.mu take it as their first argument.
//
// lockedConn has Conn's fields but none of its methods: a method of Conn
// called under the lock goes through conn(), which reads as a reminder
// that it must not take c.mu itself (send, enqueue: they take c.qmu,
// which comes after c.mu in the lock order).
type lockedConn Conn

// lock takes c.mu.
func (c *Conn) lock() *lockedConn {
	c.mu.Lock()
	return (*lockedConn)(c)
}

// unlock lets c.mu go. A state transition refused while it was held
// (states.go) is then taken for a bug: stateBug logs it and ends the
// connection.
func (c *lockedConn) unlock() {
	fault := c.fault
	c.fault = nil
	c.mu.Unlock()
	if fault != nil {
		c.conn().stateBug(fault)
	}
}

// conn returns c as a Conn, for its methods that do not take c.mu.
func (c *lockedConn) conn() *Conn { return (*Conn)(c) }

// A lockedQueue is a Conn whose mutex c.qmu is held: the outgoing queue
// (outq, outBytes, pending, rawFree, writing, stop). Methods that need
// c.qmu held are defined on it, and Conn.lockQueue is the only way to get
// one. c.qmu comes after c.mu in the lock order: a lockedConn may take it.
type lockedQueue Conn

// lockQueue takes c.qmu.
func (c *Conn) lockQueue() *lockedQueue {
	c.qmu.Lock()
	return (*lockedQueue)(c)
}

// unlock lets c.qmu go.
func (c *lockedQueue) unlock() { c.qmu.Unlock() }

// A lockedRole is a Conn whose reading role's mutex (c.role.mu) is held:
// who reads, who waits to (role.go). Methods that need it held are
// defined on it, and Conn.lockRole is the only way to get one. It is
// never held together with c.mu or c.qmu.
type lockedRole Conn

// lockRole takes c.role.mu.
func (c *Conn) lockRole() *lockedRole {
	c.role.mu.Lock()
	return (*lockedRole)(c)
}

// unlock lets c.role.mu go.
func (c *lockedRole) unlock() { c.role.mu.Unlock() }

// conn returns c as a Conn, for its methods that do not take c.role.mu.
func (c *lockedRole) conn() *Conn { return (*Conn)(c) }
