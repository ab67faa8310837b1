package rpcconn

import (
	"reflect"
	"sync"
	"time"
	"unsafe"

	"capnproto.org/go/capnp/v3"
)

// go-capnp v3.1.0-alpha.2 leaves a Promise's lock held when Future.Client
// is called on a path of an unresolved promise that already has a client
// (answer.go, Future.Client: `return cp.client` without Unlock). That is
// a program calling, say, a generated Result() twice on a call still in
// flight. The promise's next Lock never returns: the Resolve that its
// Return brings would stop our reader, and with it the whole connection.
//
// settle therefore looks at the lock before resolving: free, or taken and
// given back within promiseLockPatience, it resolves on the reader as
// always; held longer, it logs the fault and leaves the Resolve to a
// goroutine of its own, which waits for the lock (for ever if it was
// leaked, and it then belongs to that promise, which go-capnp has broken:
// nothing can stop it). The connection carries on. The lock is reached
// through its offset in capnp.Promise, found by reflection when the
// package loads; if go-capnp's layout ever differs, the check is off
// (TestPromiseLockFound fails) and settle resolves as before.
const promiseLockPatience = 250 * time.Millisecond

// promiseLockOffset is the offset of the sync.Mutex guarding a
// capnp.Promise's state; 0 if it was not found.
var promiseLockOffset = findPromiseLock()

func findPromiseLock() uintptr {
	state, ok := reflect.TypeFor[capnp.Promise]().FieldByName("state")
	if !ok || state.Type.Kind() != reflect.Struct {
		return 0
	}
	mu, ok := state.Type.FieldByName("mu")
	if !ok || mu.Type != reflect.TypeFor[sync.Mutex]() {
		return 0
	}
	return state.Offset + mu.Offset
}

// promiseLock returns the lock of p's state, or nil if it was not found.
func promiseLock(p *capnp.Promise) *sync.Mutex {
	if promiseLockOffset == 0 {
		return nil
	}
	return (*sync.Mutex)(unsafe.Add(unsafe.Pointer(p), promiseLockOffset))
}

// promiseLockStuck reports whether p's lock stayed held for
// promiseLockPatience; it waits only while the lock is held.
func promiseLockStuck(p *capnp.Promise) bool {
	mu := promiseLock(p)
	if mu == nil {
		return false
	}
	if mu.TryLock() {
		mu.Unlock()
		return false
	}
	deadline := time.Now().Add(promiseLockPatience)
	for wait := 10 * time.Microsecond; time.Now().Before(deadline); wait = min(2*wait, 10*time.Millisecond) {
		time.Sleep(wait)
		if mu.TryLock() {
			mu.Unlock()
			return false
		}
	}
	return true
}
