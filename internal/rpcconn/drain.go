package rpcconn

import "time"

// CloseAfterReturns ends the connection as Close does, once the calls
// being delivered have returned and everything queued for the peer has
// been written, or once grace has passed, whichever comes first. It is
// for a process that stops: a call that asked it to stop, or any other
// call that was about to return, still gets its Return to the peer
// rather than a closed socket. Calls that arrive meanwhile are served as
// usual; grace bounds the wait whatever the peer does.
func (c *Conn) CloseAfterReturns(grace time.Duration) {
	deadline := time.Now().Add(grace)
	pause := 100 * time.Microsecond
	for !c.quiet() && time.Now().Before(deadline) {
		select {
		case <-c.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Millisecond)
	}
	c.Close()
}

// quiet reports whether no call is being delivered and nothing waits to
// be written. A Return is queued under c.mu in the same step that ends
// its call's delivery (answer.Return), so a call seen as returned has its
// Return in the queue already.
func (c *Conn) quiet() bool {
	lc := c.lock()
	active, closing := c.active, c.closing
	lc.unlock()
	if closing {
		return true
	}
	if active > 0 || c.flushDue.Load() {
		return false
	}
	lq := c.lockQueue()
	defer lq.unlock()
	return !c.writing && len(c.outq) == 0 && len(c.pending) == 0
}
