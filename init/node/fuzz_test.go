package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/ipc"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// FuzzInitConn feeds arbitrary bytes, as a client would send them, to a
// connection that serves the node's Init (NewInit, as -ipcbind clients of
// a node get it, less the node's own services) through protocol.Serve on
// a socketpair. Whatever the bytes, the connection must either end or
// stay healthy, and once the client closes its side it must end without
// a panic, within a bounded time, leaving no goroutine behind.
//
// The seeds in testdata/fuzz/FuzzInitConn are a recorded valid session
// and the hostile inputs of the integration tests; rewrite them with
// NODE_WRITE_SEEDS=1 go test -run TestWriteInitConnSeeds.
func FuzzInitConn(f *testing.F) {
	f.Fuzz(fuzzInitConn)
}

func fuzzInitConn(t *testing.T, data []byte) {
	watchdog := time.AfterFunc(20*time.Second, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		os.WriteFile(filepath.Join(os.TempDir(), "node-fuzz-hang.txt"), buf[:n], 0o644)
		panic("FuzzInitConn: input hung the connection; stacks in node-fuzz-hang.txt")
	})
	defer watchdog.Stop()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	client, served, i := serveInit(t)
	defer i.Close()
	// Take what the node writes, so that it never blocks on us, and
	// report the Return for the probe question.
	probed := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dec := capnp.NewDecoder(client)
		for {
			msg, err := dec.Decode()
			if err != nil {
				io.Copy(io.Discard, client)
				return
			}
			m, _ := rpccp.ReadRootMessage(msg)
			if m.Which() != rpccp.Message_Which_return {
				continue
			}
			if r, err := m.Return(); err == nil && r.AnswerId() == probeQuestion {
				close(probed)
				io.Copy(io.Discard, client)
				return
			}
		}
	}()
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Write(data) // fails once the node has ended the connection
	// Healthy or ended: if the bytes were whole messages and the node
	// took them all, it must answer a Bootstrap, or end the connection.
	if err == nil && wholeMessages(data) {
		client.Write(rpcmsg.Frame(rpcmsg.Bootstrap(probeQuestion)))
		select {
		case <-probed:
		case <-served:
			served <- nil
		case <-time.After(5 * time.Second):
			t.Fatal("the connection neither answered a Bootstrap nor ended")
		}
	}
	client.CloseWrite()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end after the client closed")
	}
	client.Close()
	wg.Wait()
}

// probeQuestion is the question ID of the Bootstrap that checks a
// connection's health after a fuzz input.
const probeQuestion = 1<<32 - 2

// wholeMessages reports whether data is a sequence of whole frames.
func wholeMessages(data []byte) bool {
	for len(data) > 0 {
		if len(data) < 4 {
			return false
		}
		n := uint64(binary.LittleEndian.Uint32(data)) + 1
		hlen := 4 + 4*n
		hlen += hlen % 8
		if n > 512 || uint64(len(data)) < hlen {
			return false
		}
		total := hlen
		for i := uint64(0); i < n; i++ {
			total += 8 * uint64(binary.LittleEndian.Uint32(data[4+4*i:]))
		}
		if uint64(len(data)) < total {
			return false
		}
		data = data[total:]
	}
	return true
}

// serveInit serves the node's Init (NewInit, as -ipcbind clients of a
// node get it, less the node's own services) through protocol.Serve on
// one end of a socketpair. It returns the other end, the channel that
// gets Serve's result, and the Ipc behind the Init, for the caller to
// close (before its own leak checks).
func serveInit(t testing.TB) (client *net.UnixConn, served chan error, i *ipc.Ipc) {
	t.Helper()
	server, client := socketPair(t)
	i = ipc.New(ExeName, os.Args[0], NewInit, nil)
	served = make(chan error, 1)
	go func() {
		served <- protocol.Serve(context.Background(), server, func(c *protocol.Conn) capnp.Client {
			return capnp.Client(NewInit(i.Context(), c))
		}, nil)
	}()
	return client, served, i
}

func socketPair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// recordingConn keeps a copy of what is written through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// recordSession runs a real client against the node's Init (bootstrap,
// hello, makeEcho, echo) and returns the bytes the client sent.
func recordSession(t *testing.T) []byte {
	t.Helper()
	client, served, i := serveInit(t)
	defer i.Close()
	rec := &recordingConn{Conn: client}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, boot, err := protocol.Connect(ctx, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	init := schema.Init(boot)
	fut, release := init.Hello(ctx, func(p schema.Init_hello_Params) error {
		w, err := p.NewCaller()
		if err != nil {
			return err
		}
		w.SetProtocolVersion(schema.ProtocolVersion)
		if err := w.SetExecutable("fuzz"); err != nil {
			return err
		}
		return w.SetBuild("fuzz")
	})
	if _, err := fut.Struct(); err != nil {
		t.Fatalf("hello: %v", err)
	}
	release()
	if got, err := Echo(ctx, init, "recorded"); err != nil || got != "recorded" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	init.Release()
	conn.Close()
	<-conn.Done()
	<-served
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// Leave out the Abort that closing sent: the node would drop its
	// replies to a peer that has gone.
	dec := capnp.NewDecoder(bytes.NewReader(rec.buf.Bytes()))
	var out []byte
	for {
		msg, err := dec.Decode()
		if err != nil {
			return out
		}
		if m, _ := rpccp.ReadRootMessage(msg); m.Which() == rpccp.Message_Which_abort {
			continue
		}
		b, err := msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
}

// validSession is a client's session built by hand: bootstrap, hello,
// makeEcho and a pipelined echo, and the bootstrap's Finish (a Finish for
// a call that has not returned would cancel it). (A recorded
// session cannot be replayed blindly: a client reuses a question ID once
// it has the Return, which a replay does not wait for.)
func validSession() []byte {
	return cat(
		rpcmsg.Frame(rpcmsg.Bootstrap(0)),
		rpcmsg.Frame(rpcmsg.Call(1, rpcmsg.PromisedAnswer(0), schema.Init_TypeID, 1, func(st capnp.Struct) {
			w, _ := schema.Init_hello_Params(st).NewCaller()
			w.SetProtocolVersion(schema.ProtocolVersion)
			w.SetExecutable("fuzz")
			w.SetBuild("fuzz")
		})),
		rpcmsg.Frame(rpcmsg.Call(2, rpcmsg.PromisedAnswer(0), schema.Init_TypeID, 0, nil)),
		rpcmsg.Frame(rpcmsg.Call(3, rpcmsg.PromisedAnswer(2, 0), schema.Echo_TypeID, 0, func(st capnp.Struct) {
			schema.Echo_echo_Params(st).SetEcho("replayed")
		})),
		rpcmsg.Frame(rpcmsg.Finish(0)),
	)
}

// TestValidSessionSeed checks that the valid session seed gets its
// answers: it exercises the node's methods, not only its framing.
func TestValidSessionSeed(t *testing.T) {
	client, served, i := serveInit(t)
	defer i.Close()
	defer client.Close()
	session := validSession()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Write(session); err != nil {
		t.Fatal(err)
	}
	dec := capnp.NewDecoder(client)
	var got []string
	for len(got) < 3 {
		msg, err := dec.Decode()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		m, _ := rpccp.ReadRootMessage(msg)
		if m.Which() != rpccp.Message_Which_return {
			continue
		}
		r, _ := m.Return()
		if r.Which() != rpccp.Return_Which_results {
			t.Fatalf("return %d: %v", r.AnswerId(), r.Which())
		}
		got = append(got, fmt.Sprint(r.AnswerId()))
		if r.AnswerId() == 3 {
			res, _ := r.Results()
			content, _ := res.Content()
			if s, _ := schema.Echo_echo_Results(content.Struct()).Result(); s != "replayed" {
				t.Fatalf("echo = %q", s)
			}
		}
	}
	client.CloseWrite()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// initConnSeeds returns the seed corpus: the recorded session, the
// session cut short, and hostile inputs.
func initConnSeeds(t *testing.T) map[string][]byte {
	session := recordSession(t)
	bootstrap := rpcmsg.Frame(rpcmsg.Bootstrap(0))
	makeEcho := rpcmsg.Frame(rpcmsg.Call(1, rpcmsg.ImportedCap(0), schema.Init_TypeID, 0, nil))
	valid := validSession()
	seeds := map[string][]byte{
		"session":                 valid,
		"session-cut":             valid[:len(valid)/2],
		"session-recorded":        session,
		"null-body-return":        cat(bootstrap, rpcmsg.NullBody(rpccp.Message_Which_return)),
		"pipelined-on-null-cap":   cat(bootstrap, makeEcho, rpcmsg.Frame(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 5), schema.Echo_TypeID, 0, nil))),
		"pipelined-on-error-cap":  cat(bootstrap, rpcmsg.Frame(rpcmsg.Call(1, rpcmsg.ImportedCap(0), schema.Init_TypeID, 99, nil)), rpcmsg.Frame(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 0, nil))),
		"http":                    []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
		"1gib-header":             rpcmsg.Header(1 << 27),
		"segments-ffffffff":       {0xff, 0xff, 0xff, 0xff},
		"513-segments":            rpcmsg.Header(make([]uint32, 513)...),
		"return-unknown-question": rpcmsg.Frame(func(m rpccp.Message) { r, _ := m.NewReturn(); r.SetAnswerId(9); r.NewResults() }),
		"duplicate-finish":        cat(bootstrap, rpcmsg.Frame(rpcmsg.Finish(0)), rpcmsg.Frame(rpcmsg.Finish(0))),
		"call-unknown-cap":        rpcmsg.Frame(rpcmsg.Call(0, rpcmsg.ImportedCap(7), schema.Echo_TypeID, 0, nil)),
		"second-bootstrap":        cat(bootstrap, rpcmsg.Frame(rpcmsg.Bootstrap(1)), makeEcho),
		"incomplete":              append(rpcmsg.Header(4), 1, 2, 3, 4, 5, 6, 7, 8),
		"zero-size-list": cat(bootstrap, rpcmsg.Frame(func(m rpccp.Message) {
			rpcmsg.Call(1, rpcmsg.ImportedCap(0), schema.Init_TypeID, 0, nil)(m)
			c, _ := m.Call()
			params, _ := c.Params()
			capnp.Struct(params).SetPtr(1, capnp.NewVoidList(params.Segment(), 1<<29-1).ToPtr())
		})),
		"deep-nesting": cat(bootstrap, makeEcho, rpcmsg.Frame(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 0, func(st capnp.Struct) {
			for range 100 {
				next, _ := capnp.NewStruct(st.Segment(), capnp.ObjectSize{PointerCount: 1})
				st.SetPtr(0, next.ToPtr())
				st = next
			}
		}))),
		"echo-after": cat(bootstrap, makeEcho, rpcmsg.Frame(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 1, func(st capnp.Struct) {
			rpcmsg.Text("later")(st)
			st.SetUint32(0, 60000)
		}))),
		"stop": cat(bootstrap, rpcmsg.Frame(rpcmsg.Call(1, rpcmsg.ImportedCap(0), schema.Init_TypeID, 3, nil))),
	}
	for w := byte(0); w < 16; w++ {
		seeds[fmt.Sprintf("null-body-%02d", w)] = rpcmsg.NullBody(rpccp.Message_Which(w))
	}
	return seeds
}

// TestWriteInitConnSeeds writes the seed corpus to
// testdata/fuzz/FuzzInitConn when NODE_WRITE_SEEDS=1.
func TestWriteInitConnSeeds(t *testing.T) {
	if os.Getenv("NODE_WRITE_SEEDS") != "1" {
		t.Skip("set NODE_WRITE_SEEDS=1 to rewrite the committed seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzInitConn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range initConnSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
