package protocol

// SetNewConnHook has f run in newConn, with the role ("serve" or
// "connect"), once the RPC connection has started and before the Conn
// records it; the returned function removes it.
func SetNewConnHook(f func(role string)) (restore func()) {
	testNewConnHook = f
	return func() { testNewConnHook = nil }
}
