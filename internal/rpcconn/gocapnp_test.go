package rpcconn

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/exp/bufferpool"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	"capnproto.org/go/capnp/v3/server"
)

// Tests of what gocapnp.go assumes of go-capnp, one per assumption (the
// numbers are gocapnp.go's), and of the version they were checked
// against.

const goCapnpModule = "capnproto.org/go/capnp/v3"

// goCapnpVersion returns the version of go-capnp this package is built
// with: from the binary's build information, or else (test binaries
// carry no dependencies there) from the module's go.mod.
func goCapnpVersion(t *testing.T) string {
	t.Helper()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == goCapnpModule {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		f, err := os.Open(filepath.Join(dir, "go.mod"))
		if err == nil {
			defer f.Close()
			return requiredVersion(t, f.Name(), bufio.NewScanner(f))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the package's directory, and no build information naming go-capnp")
		}
		dir = parent
	}
}

// requiredVersion reads the version of go-capnp a go.mod requires (or
// replaces it with).
func requiredVersion(t *testing.T, name string, sc *bufio.Scanner) string {
	t.Helper()
	var required, replaced string
	for sc.Scan() {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		switch {
		case len(f) >= 2 && f[0] == goCapnpModule:
			required = f[1]
		case len(f) >= 5 && f[0] == "replace" && f[1] == goCapnpModule && f[2] == "=>":
			replaced = f[len(f)-1]
		}
	}
	if replaced != "" {
		return replaced
	}
	if required == "" {
		t.Fatalf("%s does not require %s", name, goCapnpModule)
	}
	return required
}

func TestGoCapnpVersion(t *testing.T) {
	if v := goCapnpVersion(t); v != checkedVersion {
		t.Fatalf("go-capnp is %s; gocapnp.go was checked against %s: re-check each assumption listed there, then update checkedVersion", v, checkedVersion)
	}
}

// 1. Our pool is the one go-capnp's arenas use: a buffer of a message
// larger than go-capnp's own largest bucket (512 KiB) comes back from it.
func TestBufferPoolSwapped(t *testing.T) {
	const size = 2 << 20
	seen := false
	for range 10 {
		msg, seg := newMessageSeg()
		if _, err := capnp.NewUInt8List(seg, size); err != nil {
			t.Fatal(err)
		}
		b := seg.Data()
		first, n := &b[:1][0], cap(b)
		releaseOut(msg)
		got := bufferpool.Default.Get(n)
		if len(got) > 0 && &got[:1][0] == first {
			seen = true
		}
		bufferpool.Default.Put(got)
		if seen {
			break
		}
	}
	if !seen {
		t.Error("a 2 MiB message's buffer never came back from bufferpool.Default: go-capnp no longer takes its buffers from it, or the pool set at init is not in use")
	}
}

// 3. structMirror has capnp.Struct's fields, in order, of the same sizes
// and at the same offsets.
func TestStructMirror(t *testing.T) {
	theirs, ours := reflect.TypeFor[capnp.Struct](), reflect.TypeFor[structMirror]()
	if theirs.Size() != ours.Size() || theirs.NumField() != ours.NumField() {
		t.Fatalf("capnp.Struct: %d bytes, %d fields; structMirror: %d bytes, %d fields: go-capnp's layout changed (gocapnp.go, 3)",
			theirs.Size(), theirs.NumField(), ours.Size(), ours.NumField())
	}
	for i := range theirs.NumField() {
		a, b := theirs.Field(i), ours.Field(i)
		if a.Name != b.Name || a.Offset != b.Offset || a.Type.Size() != b.Type.Size() || a.Type.Kind() != b.Type.Kind() {
			t.Errorf("field %d: capnp.Struct has %s (%s, %d bytes at %d), structMirror %s (%s, %d bytes at %d)",
				i, a.Name, a.Type, a.Type.Size(), a.Offset, b.Name, b.Type, b.Type.Size(), b.Offset)
		}
	}
	var s capnp.Struct
	if unsafe.Sizeof(s) != unsafe.Sizeof(structMirror{}) {
		t.Error("sizes differ")
	}
}

// 3 and 4: the check made at start passes, so lending and call templates
// are on.
func TestStructLayout(t *testing.T) {
	if !structLayoutOK {
		t.Fatal("capnp.Struct's layout is not the one gocapnp.go reads: large fields are copied, never lent")
	}
}

// 5. The lock settle looks at is found in go-capnp's Promise, and it is
// the one the Promise takes: held, the promise cannot be resolved; given
// back, it can.
func TestPromiseLockFound(t *testing.T) {
	if promiseLockOffset == 0 {
		t.Fatal("capnp.Promise has no state.mu of type sync.Mutex: go-capnp's layout changed; settle no longer guards against a leaked promise lock")
	}
	p := capnp.NewPromise(capnp.Method{}, failedCaller{errNoPipeline}, nil)
	mu := promiseLock(p)
	mu.Lock()
	if !promiseLockStuck(p) {
		t.Error("a held lock was not reported stuck")
	}
	done := make(chan struct{})
	go func() {
		p.Fulfill(capnp.Ptr{})
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the promise resolved while its lock was held: the lock found is not the promise's")
	case <-time.After(50 * time.Millisecond):
	}
	mu.Unlock()
	<-done
	if promiseLockStuck(p) {
		t.Error("a free lock was reported stuck")
	}
}

// 6. A go-capnp server's Recv of a call it runs returns its AnswerQueue.
func TestServerRecvIsAnswerQueue(t *testing.T) {
	release := make(chan struct{})
	srv := server.New([]server.Method{{
		Method: capnp.Method{InterfaceID: 1, MethodID: 0},
		Impl: func(context.Context, *server.Call) error {
			<-release
			return nil
		},
	}}, nil, nil)
	defer srv.Shutdown()
	r, ret, err := sendToRecv(capnp.Send{Method: capnp.Method{InterfaceID: 1, MethodID: 0}})
	if err != nil {
		t.Fatal(err)
	}
	pc := srv.Recv(context.Background(), r)
	if !isAnswerQueue(pc) {
		t.Errorf("a go-capnp server's Recv returned %T, not *capnp.AnswerQueue: heldCall no longer recognises it (gocapnp.go, 6)", pc)
	}
	close(release)
	ans, rel := ret.Answer(r.Method, pc)
	defer rel()
	if _, err := ans.Struct(); err != nil {
		t.Fatal(err)
	}
}

// 7. go-capnp's rpc closes with the reason NormalClose recognises.
func TestGoCapnpCloseReason(t *testing.T) {
	if rpc.ErrConnClosed.Error() != goCapnpCloseReason {
		t.Errorf("rpc.ErrConnClosed reads %q, not %q (gocapnp.go, 7)", rpc.ErrConnClosed.Error(), goCapnpCloseReason)
	}
	a, b := socketPair(t)
	ours := NewConn(a, nil)
	theirs := rpc.NewConn(transport.NewStream(b), nil)
	defer ours.Close()
	theirs.Close()
	select {
	case <-ours.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("our end did not see go-capnp's close")
	}
	var pe *ProtocolError
	if !errors.As(ours.Err(), &pe) || !pe.NormalClose() {
		t.Errorf("after go-capnp closed, Err = %v; want a ProtocolError that is a NormalClose (gocapnp.go, 7)", ours.Err())
	}
}

// 8. go-capnp's Answer wraps the error a peer returned; relayRemote
// finds the peer's exception in it.
func TestRelayRemote(t *testing.T) {
	re := &RemoteError{Type: exc.Overloaded, Reason: "busy"}
	p := capnp.NewPromise(capnp.Method{InterfaceID: 7, MethodID: 3, InterfaceName: "I", MethodName: "m"}, failedCaller{errNoPipeline}, nil)
	p.Reject(&exc.Exception{Type: exc.Overloaded, Cause: re})
	_, err := p.Answer().Struct()
	p.ReleaseClients()
	got := relayRemote(err)
	var e *exc.Exception
	if !errors.As(got, &e) || e.Type != exc.Overloaded || got.Error() != "busy" {
		t.Errorf("relayRemote(%q) = %q; want the peer's reason alone, type overloaded (gocapnp.go, 8)", err, got)
	}
}
