package mp

import (
	"context"
	"sync"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// Lend and Borrow: see the package documentation's section on large
// payloads. The mechanism is rpcconn's lent segments (a field sent as a
// segment of its own, from where its bytes are).

// MinLend is the size in bytes from which a Text or Data field is sent
// from where its bytes are rather than copied into the message (a
// segment of its own): below it a copy costs less. Lend and Borrow
// change nothing for smaller fields.
const MinLend = rpcconn.MinLend

type lendKey struct{}

type borrowKey struct{}

// Lend returns a context under which calls made through generated proxies
// send their Data ([]byte) parameters of MinLend bytes or more from the
// caller's own slices instead of copying them into the call: the caller
// lends the bytes for the call and must not change them until the call
// returns (as with io.Writer.Write). The call reads them until it
// returns, however it ends (an error, ctx ending), and not after.
//
// Lending applies to calls that wait for their results; a call to a
// `-> stream` method, or one made with a generated XPipelined method,
// returns before its parameters are sent, and copies them. It applies to
// calls through a connection; a local value called in this process gets
// the caller's slice as any Go function does.
func Lend(ctx context.Context) context.Context {
	if lends(ctx) {
		return ctx
	}
	return context.WithValue(ctx, lendKey{}, true)
}

func lends(ctx context.Context) bool {
	v, _ := ctx.Value(lendKey{}).(bool)
	return v
}

// Borrow returns a context under which calls made through generated
// proxies return their Data ([]byte) results of MinLend bytes or more
// where the results message holds them, instead of copying them into
// slices of the caller's own, and the function that gives them back. The
// results stay valid, and must not be changed, until release is called;
// after it they must not be used (the connection reuses their memory).
// Call release once the results of every call made under ctx are no
// longer needed, and not while such a call is in progress; it is
// idempotent. Calls made under ctx after release copy their results as
// usual.
//
// Results of calls to a local value in this process are whatever the
// method returned, borrowed or not.
func Borrow(ctx context.Context) (context.Context, func()) {
	s := &borrowScope{}
	return context.WithValue(ctx, borrowKey{}, s), s.release
}

// A borrowScope holds the results messages of the calls made under a
// Borrow context, until its release.
type borrowScope struct {
	mu     sync.Mutex
	closed bool
	frees  []func()
}

func borrowOf(ctx context.Context) *borrowScope {
	s, _ := ctx.Value(borrowKey{}).(*borrowScope)
	return s
}

// open reports whether results may still be borrowed under s.
func (s *borrowScope) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed
}

// keep adds free, which gives back a call's results, to what release
// runs. After release it is not run: results borrowed by a call that
// was in progress when the scope was released are left to the garbage
// collector rather than reused under the caller.
func (s *borrowScope) keep(free func()) {
	s.mu.Lock()
	if !s.closed {
		s.frees = append(s.frees, free)
	}
	s.mu.Unlock()
}

func (s *borrowScope) release() {
	s.mu.Lock()
	frees := s.frees
	s.frees = nil
	s.closed = true
	s.mu.Unlock()
	for _, f := range frees {
		f()
	}
}
