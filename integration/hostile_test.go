package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	nodeinit "github.com/gomultiprocess/multiprocess/init/node"
	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// maxNodeHWMKiB bounds the node's peak resident memory through the hostile
// cases: a node that allocated what a frame header claims (1 GiB) or
// queued without bound for a peer that never reads would pass it.
const maxNodeHWMKiB = 150 << 10

// A hostile case sends bytes on a fresh connection to the node's -ipcbind
// socket. Unless healthy is set, the node must end that connection (EOF,
// reset, or an Abort read back) and log "connection closed" with an error
// matching logged; a healthy case checks its own replies and the
// connection stays usable.
type hostileCase struct {
	name    string
	logged  string // regexp for the err of the "connection closed" line
	healthy bool
	stalls  bool // the node may stop reading and keep the connection open
	run     func(t *testing.T, p *rawPeer)
}

var hostileCases = []hostileCase{
	{name: "null-body return while a bootstrap is open", logged: `return with a null body`,
		run: func(t *testing.T, p *rawPeer) {
			p.send(rpcmsg.Bootstrap(0))
			p.mustWrite(rpcmsg.NullBody(rpccp.Message_Which_return))
		}},
	{name: "pipelined call on a null capability", healthy: true,
		run: func(t *testing.T, p *rawPeer) {
			boot := p.bootstrap(0)
			p.send(rpcmsg.Call(1, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil)) // makeEcho
			// makeEcho's results have one pointer: field 5 is null.
			p.send(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 5), schema.Echo_TypeID, 0, rpcmsg.Text("null")))
			if r := p.expectReturn(2); r.Which() != rpccp.Return_Which_exception {
				t.Errorf("call on a null capability: return %v, want an exception", r.Which())
			}
			checkRawEcho(t, p, 3, rpcmsg.PromisedAnswer(1, 0))
		}},
	{name: "pipelined call on an error capability", healthy: true,
		run: func(t *testing.T, p *rawPeer) {
			boot := p.bootstrap(0)
			p.send(rpcmsg.Call(1, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 99, nil)) // no such method
			p.send(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 0, rpcmsg.Text("error")))
			for _, q := range []uint32{1, 2} {
				if r := p.expectReturn(q); r.Which() != rpccp.Return_Which_exception {
					t.Errorf("question %d: return %v, want an exception", q, r.Which())
				}
			}
			p.send(rpcmsg.Call(3, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil))
			checkRawEcho(t, p, 4, rpcmsg.PromisedAnswer(3, 0))
		}},
	{name: "random bytes", logged: `segments|too large|bad frame|unreadable|null body|unknown`,
		run: func(t *testing.T, p *rawPeer) {
			b := make([]byte, 4096)
			rand.New(rand.NewSource(7)).Read(b)
			_ = p.write(b) // the node may close before taking all of it
		}},
	{name: "HTTP request", logged: `message has \d+ segments, more than 512`,
		run: func(t *testing.T, p *rawPeer) {
			_ = p.write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"))
		}},
	{name: "frame header claiming 1 GiB", logged: `message too large`,
		run: func(t *testing.T, p *rawPeer) {
			p.mustWrite(rpcmsg.Header(1 << 27)) // words
		}},
	{name: "segment count 0xFFFFFFFF", logged: `message has 4294967296 segments`,
		run: func(t *testing.T, p *rawPeer) {
			p.mustWrite([]byte{0xff, 0xff, 0xff, 0xff})
		}},
	{name: "513 segments", logged: `message has 513 segments`,
		run: func(t *testing.T, p *rawPeer) {
			_ = p.write(rpcmsg.Header(make([]uint32, 513)...))
		}},
	{name: "list of 2^29 zero-size elements", logged: `traversal limit`,
		run: func(t *testing.T, p *rawPeer) {
			boot := p.bootstrap(0)
			// The params' cap table, which the node reads before the
			// call, as a list of 2^29-1 void elements: 0 bytes on the
			// wire, 4 GiB to a reader that counts a word per element.
			p.send(func(m rpccp.Message) {
				rpcmsg.Call(1, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil)(m)
				c, _ := m.Call()
				params, _ := c.Params()
				l := capnp.NewVoidList(params.Segment(), 1<<29-1)
				capnp.Struct(params).SetPtr(1, l.ToPtr())
			})
		}},
	{name: "return for an unknown question", logged: `return for unknown question 9`,
		run: func(t *testing.T, p *rawPeer) {
			p.send(func(m rpccp.Message) { r, _ := m.NewReturn(); r.SetAnswerId(9); r.NewResults() })
		}},
	{name: "duplicate finish", logged: `finish for unknown question 0`,
		run: func(t *testing.T, p *rawPeer) {
			p.bootstrap(0)
			p.send(rpcmsg.Finish(0))
			p.send(rpcmsg.Finish(0))
		}},
	{name: "call to an unknown capability", logged: `unknown export 7`,
		run: func(t *testing.T, p *rawPeer) {
			p.send(rpcmsg.Call(0, rpcmsg.ImportedCap(7), schema.Echo_TypeID, 0, rpcmsg.Text("nobody")))
		}},
	{name: "deep nesting", healthy: true,
		run: func(t *testing.T, p *rawPeer) {
			boot := p.bootstrap(0)
			p.send(rpcmsg.Call(1, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil))
			// Echo.echo's argument is a chain of 200 structs instead of
			// text, deeper than the depth limit of 64.
			p.send(rpcmsg.Call(2, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 0, func(st capnp.Struct) {
				for range 200 {
					next, _ := capnp.NewStruct(st.Segment(), capnp.ObjectSize{PointerCount: 1})
					st.SetPtr(0, next.ToPtr())
					st = next
				}
			}))
			r := p.expectReturn(2)
			t.Logf("echo of a deep chain: return %v", r.Which())
			checkRawEcho(t, p, 3, rpcmsg.PromisedAnswer(1, 0))
		}},
	{name: "calls from a peer that never reads", stalls: true,
		run: func(t *testing.T, p *rawPeer) {
			boot := p.bootstrap(0)
			p.send(rpcmsg.Call(1, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil))
			// Echoes of 1 KiB, each finished at once, none of the
			// replies read: the node's replies back up until its
			// queue is full, then it stops reading this peer, whose
			// writes stall. Its memory must stay bounded meanwhile.
			arg := rpcmsg.Text(strings.Repeat("x", 1024))
			q := uint32(2)
			for {
				var buf []byte
				for range 100 {
					buf = append(buf, rpcmsg.Frame(rpcmsg.Call(q, rpcmsg.PromisedAnswer(1, 0), schema.Echo_TypeID, 0, arg))...)
					buf = append(buf, rpcmsg.Frame(rpcmsg.Finish(q))...)
					q++
				}
				p.nc.SetWriteDeadline(time.Now().Add(3 * time.Second))
				_, err := p.nc.Write(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Logf("the node stopped reading after %d calls", q-2)
					return
				}
				if err != nil {
					// The node may also end the connection (a limit on
					// calls in flight, or on how long a write may wait).
					t.Logf("the node ended the connection after %d calls: %v", q-2, err)
					return
				}
				if q > 1<<20 {
					t.Fatalf("the node took %d calls without its replies being read", q)
				}
			}
		}},
	{name: "second bootstrap", healthy: true,
		run: func(t *testing.T, p *rawPeer) {
			a := p.bootstrap(0)
			b := p.bootstrap(1)
			for n, boot := range []uint32{a, b} {
				q := uint32(10 + 2*n)
				p.send(rpcmsg.Call(q, rpcmsg.ImportedCap(boot), schema.Init_TypeID, 0, nil))
				checkRawEcho(t, p, q+1, rpcmsg.PromisedAnswer(q, 0))
			}
		}},
}

// checkRawEcho calls Echo.echo as question qid on target and checks the
// reply.
func checkRawEcho(t *testing.T, p *rawPeer, qid uint32, target func(rpccp.MessageTarget)) {
	t.Helper()
	p.send(rpcmsg.Call(qid, target, schema.Echo_TypeID, 0, rpcmsg.Text("still here")))
	r := p.expectReturn(qid)
	res, err := r.Results()
	if err != nil {
		t.Fatalf("echo as question %d: return %v: %v", qid, r.Which(), err)
	}
	content, _ := res.Content()
	if got := schema.Echo_echo_Results(content.Struct()); !got.HasResult() {
		t.Fatalf("echo as question %d: no result", qid)
	} else if s, _ := got.Result(); s != "still here" {
		t.Fatalf("echo as question %d = %q", qid, s)
	}
}

// echoLoop has init echo over and over until stop is closed, and returns
// the first error and how many echoes came back.
func echoLoop(ctx context.Context, init schema.Init, stop <-chan struct{}) (int, error) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return n, nil
		case <-time.After(5 * time.Millisecond):
		}
		got, err := nodeinit.Echo(ctx, init, "bystander")
		if err != nil {
			return n, err
		}
		if got != "bystander" {
			return n, fmt.Errorf("echo returned %q", got)
		}
	}
}

// Hostile bytes on -ipcbind: each case ends its own connection with a
// logged reason (or, where the protocol makes it an error for one call,
// leaves the connection healthy), the node's memory stays bounded, and
// another client's echoes keep coming back during and after.
func TestHostileIPCBind(t *testing.T) {
	dataDir := t.TempDir()
	node := startNode(t, dataDir, "-ipcbind=unix")
	pid := node.cmd.Process.Pid
	sock := filepath.Join(dataDir, "node.sock")
	i := newIpc(t)
	bystander := connectNode(t, i, dataDir, "unix")
	ctx := testCtx(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var echoes int
	var echoErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		echoes, echoErr = echoLoop(ctx, bystander, stop)
	}()
	var once sync.Once
	stopLoop := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer stopLoop()

	// A message left incomplete: its connection is dropped after the
	// node's default -ipcmessagetimeout (10 s; TestNodeIPCTimeoutFlags
	// sets it), while the other cases run.
	from := len(node.out.String())
	partial := dialRaw(t, sock)
	partialID := connID(t, node.out, from)
	partial.mustWrite(append(rpcmsg.Header(4), 1, 2, 3, 4, 5, 6, 7, 8)) // 8 of 32 bytes

	for _, tc := range hostileCases {
		t.Run(tc.name, func(t *testing.T) {
			runHostile(t, node, sock, tc)
			if got, err := nodeinit.Echo(ctx, bystander, "after"); err != nil || got != "after" {
				t.Fatalf("bystander's echo after the case = %q, %v", got, err)
			}
			if hwm := procStatusKiB(t, pid, "VmHWM"); hwm > maxNodeHWMKiB {
				t.Fatalf("node's peak resident memory is %d KiB, more than %d KiB", hwm, maxNodeHWMKiB)
			}
		})
	}
	t.Run("message left incomplete", func(t *testing.T) {
		checkEnd(t, node, partialID, partial.end(), `peer left a message incomplete: no whole message within 10s`)
	})
	stopLoop()
	if echoErr != nil {
		t.Fatalf("bystander's echo failed during the cases after %d echoes: %v", echoes, echoErr)
	}
	t.Logf("bystander: %d echoes during the cases; node VmHWM %d KiB, VmRSS %d KiB",
		echoes, procStatusKiB(t, pid, "VmHWM"), procStatusKiB(t, pid, "VmRSS"))
	stopNode(t, node)
}

// runHostile runs tc on a new connection to sock and checks how the
// connection ends.
func runHostile(t *testing.T, node *proc, sock string, tc hostileCase) {
	t.Helper()
	from := len(node.out.String())
	p := dialRaw(t, sock)
	id := connID(t, node.out, from)
	tc.run(t, p)
	if tc.stalls {
		// The node ends a connection whose peer takes none of its
		// replies once its write timeout (10 s) passes, or earlier, if
		// the peer's calls in flight pass their limit first.
		checkEnd(t, node, id, "", `peer stopped reading: it took no byte for 10s|more than 1024 calls in flight`)
		p.nc.Close()
		return
	}
	if tc.healthy {
		p.nc.Close()
		node.out.waitFor(t, lineRE(`msg="connection closed" .*conn\.id=`+id+` .*reason="peer closed"`))
		return
	}
	checkEnd(t, node, id, p.end(), tc.logged)
}

// checkEnd checks that the node logged the end of connection id with an
// error matching want, and that the Abort read back, if any, says the
// same.
func checkEnd(t *testing.T, node *proc, id, abort, want string) {
	t.Helper()
	m := node.out.waitFor(t, lineRE(`msg="connection closed" .*conn\.id=`+id+` .*reason=error .*err=(.*)`))
	re := regexp.MustCompile(want)
	if !re.MatchString(m[1]) {
		t.Errorf("node logged err=%s; want it to match %q", m[1], want)
	}
	if abort != "" && !re.MatchString(abort) {
		t.Errorf("abort read back %q; want it to match %q", abort, want)
	}
	t.Logf("abort read back: %q; node logged err=%s", abort, m[1])
}
