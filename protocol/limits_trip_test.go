package protocol_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/fdcheck"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
	"github.com/gomultiprocess/multiprocess/internal/testschema"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// Each limit that a peer can trip, through Listen: the offending
// connection ends with a logged reason (reason=error and what was
// exceeded), and another client, connected before and still calling
// after, carries on, as does a client that connects afterwards.
func TestLimitsTrip(t *testing.T) {
	var segs513 []byte
	segs513 = binary.LittleEndian.AppendUint32(segs513, 512)
	for range 513 {
		segs513 = binary.LittleEndian.AppendUint32(segs513, 1)
	}
	segs513 = append(segs513, make([]byte, 4+513*8)...)

	for _, tc := range []struct {
		name string
		opts protocol.Options
		// send plays the offending peer on nc.
		send func(t *testing.T, nc net.Conn)
		// reading: the peer reads until the server hangs up; otherwise
		// it never reads.
		reading bool
		want    string // in the "connection closed" line
	}{
		{
			name: "message size",
			opts: protocol.Options{Limits: protocol.Limits{MaxMessageSize: 64 << 10}},
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				mustWrite(t, nc, rawEcho(1, 0, strings.Repeat("x", 128<<10)))
			},
			reading: true,
			want:    "message too large",
		},
		{
			name:    "segments",
			send:    func(t *testing.T, nc net.Conn) { mustWrite(t, nc, segs513) },
			reading: true,
			want:    "513 segments, more than 512",
		},
		{
			// A list of 2^29-1 elements of no size fits in a few words,
			// but reading it counts as 4 GiB against the traversal
			// limit (64 MiB): the params cannot be read.
			name: "traversal limit",
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				mustWrite(t, nc, rawCall(1, 0, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
					return capnp.List(capnp.NewVoidList(seg, 1<<29-1)).ToPtr(), nil
				}))
			},
			reading: true,
			want:    "traversal limit",
		},
		{
			name: "calls in flight",
			send: func(t *testing.T, nc net.Conn) {
				var b []byte
				b = append(b, rpcmsg.Frame(rpcmsg.Bootstrap(0))...)
				for q := uint32(1); q <= rpcconn.DefaultMaxCalls+1; q++ {
					b = append(b, rawSleep(q, 0, uint32(patience/time.Millisecond), 0)...)
				}
				mustWrite(t, nc, b)
			},
			reading: true,
			want:    "more than 1024 calls in flight",
		},
		{
			// Three calls of 22 MiB that do not return: more than the
			// 64 MiB of calls the peer may have in flight.
			name: "bytes in flight",
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				for q := uint32(1); q <= 3; q++ {
					if _, err := nc.Write(rawSleep(q, 0, uint32(patience/time.Millisecond), 22<<20)); err != nil {
						return // the server hung up
					}
				}
			},
			reading: true,
			want:    "more than 67108864 bytes of calls in flight",
		},
		{
			// Questions that return but are never finished: their
			// answers stay in the table until the peer sends Finish.
			// Bootstrap, since its results hold a capability: results
			// without one are returned with noFinishNeeded and forgotten
			// at once.
			name: "answers not finished",
			send: func(t *testing.T, nc net.Conn) {
				// In batches, each returned before the next: fewer
				// than MaxCalls in flight at any time.
				dec := capnp.NewDecoder(nc)
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				const batch = 512
				for q := uint32(1); q <= rpcconn.DefaultMaxTableSize; q += batch {
					var b []byte
					for k := q; k < q+batch && k <= rpcconn.DefaultMaxTableSize; k++ {
						b = append(b, rpcmsg.Frame(rpcmsg.Bootstrap(k))...)
					}
					if _, err := nc.Write(b); err != nil {
						return // the server hung up
					}
					for returns := 0; returns < batch; {
						msg, err := dec.Decode()
						if err != nil {
							return // the server hung up
						}
						if m, err := rpccp.ReadRootMessage(msg); err == nil && m.Which() == rpccp.Message_Which_return {
							returns++
						}
					}
				}
			},
			reading: true,
			want:    "more than 65536 answers not finished",
		},
		// The same limits, set through Options.
		{
			name: "calls in flight, MaxCallsInFlight",
			opts: protocol.Options{Limits: protocol.Limits{MaxCallsInFlight: 8}},
			send: func(t *testing.T, nc net.Conn) {
				b := rpcmsg.Frame(rpcmsg.Bootstrap(0))
				for q := uint32(1); q <= 9; q++ {
					b = append(b, rawSleep(q, 0, uint32(patience/time.Millisecond), 0)...)
				}
				mustWrite(t, nc, b)
			},
			reading: true,
			want:    "more than 8 calls in flight",
		},
		{
			name: "bytes in flight, MaxBytesInFlight",
			opts: protocol.Options{Limits: protocol.Limits{MaxBytesInFlight: 1 << 20}},
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				for q := uint32(1); q <= 3; q++ {
					if _, err := nc.Write(rawSleep(q, 0, uint32(patience/time.Millisecond), 400<<10)); err != nil {
						return // the server hung up
					}
				}
			},
			reading: true,
			want:    "more than 1048576 bytes of calls in flight",
		},
		{
			name: "answers not finished, MaxTableSize",
			opts: protocol.Options{Limits: protocol.Limits{MaxTableSize: 64}},
			send: func(t *testing.T, nc net.Conn) {
				var b []byte
				for q := uint32(0); q <= 64; q++ {
					b = append(b, rpcmsg.Frame(rpcmsg.Bootstrap(q))...)
				}
				mustWrite(t, nc, b)
			},
			reading: true,
			want:    "more than 64 answers not finished",
		},
		{
			// 2^18 elements of no size count as 2 MiB: under the default
			// limit, over this one.
			name: "traversal limit, TraverseLimit",
			opts: protocol.Options{Limits: protocol.Limits{TraverseLimit: 1 << 20}},
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
				mustWrite(t, nc, rawCall(1, 0, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
					return capnp.List(capnp.NewVoidList(seg, 1<<18)).ToPtr(), nil
				}))
			},
			reading: true,
			want:    "traversal limit",
		},
		{
			name: "incomplete message",
			opts: protocol.Options{MessageTimeout: 100 * time.Millisecond},
			send: func(t *testing.T, nc net.Conn) {
				// One segment of four words announced; one sent.
				mustWrite(t, nc, append([]byte{0, 0, 0, 0, 4, 0, 0, 0}, make([]byte, 8)...))
			},
			reading: true,
			want:    "left a message incomplete",
		},
		{
			// Echo calls whose results fill the socket: the server's
			// writer waits for a peer that never reads.
			name: "write timeout",
			opts: protocol.Options{WriteTimeout: 200 * time.Millisecond},
			send: func(t *testing.T, nc net.Conn) {
				var b []byte
				b = append(b, rpcmsg.Frame(rpcmsg.Bootstrap(0))...)
				for q := uint32(1); q <= 16; q++ {
					b = append(b, rawEcho(q, 0, strings.Repeat("r", 256<<10))...)
				}
				mustWrite(t, nc, b)
			},
			want: "peer stopped reading: it took no byte for 200ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdcheck.Check(t, patience)
			ctx := testContext(t)
			log, logBuf := newLogger(t, "server")
			opts := tc.opts
			opts.Logger = log
			path, _, _ := listen(t, slowFactory(newSlow()), &opts)
			_, other := connectSlow(t, path, nil)
			if _, err := slowEcho(ctx, other, "before"); err != nil {
				t.Fatalf("other client's echo: %v", err)
			}

			nc := dial(t, path)
			tc.send(t, nc)
			if tc.reading {
				readUntilHangUp(t, nc)
			}
			eventually(t, "the connection closed with the reason", func() bool {
				return len(logBuf.Lines("level=INFO", `msg="connection closed"`, "reason=error", tc.want)) == 1
			})
			if !tc.reading {
				// The server hung up: what it had sent, then the end.
				nc.SetReadDeadline(time.Now().Add(patience))
				if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, net.ErrClosed) {
					t.Logf("reading after the server hung up: %v", err)
				}
			}

			if got, err := slowEcho(ctx, other, "after"); err != nil || got != "after" {
				t.Errorf("other client's echo after the limit tripped: %q, %v", got, err)
			}
			_, late := connectSlow(t, path, nil)
			if _, err := slowEcho(ctx, late, "new"); err != nil {
				t.Errorf("new client's echo: %v", err)
			}
		})
	}
}

// readUntilHangUp reads from nc until the peer closes it: end of stream,
// or a reset when the peer closed with bytes of ours still unread.
func readUntilHangUp(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reading until the server hangs up: %v", err)
	}
}

func mustWrite(t *testing.T, nc net.Conn, b []byte) {
	t.Helper()
	nc.SetWriteDeadline(time.Now().Add(patience))
	if _, err := nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// depthSlow serves testschema.Slow; its echo follows the first pointer of
// its params as long as it leads to a struct (as a method reading a
// recursive structure would), and otherwise echoes the text.
type depthSlow struct{ slowServer }

func (depthSlow) Echo(ctx context.Context, call testschema.Slow_echo) error {
	p, err := capnp.Struct(call.Args()).Ptr(0)
	for depth := 0; err == nil && p.Struct().IsValid(); depth++ {
		if p, err = p.Struct().Ptr(0); err != nil {
			return fmt.Errorf("at depth %d: %w", depth, err)
		}
	}
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetS(p.Text())
}

// The nesting depth limit (64 pointers from a message's root) is not
// reachable in the RPC messages themselves, which rpcconn reads at a fixed
// depth; it bounds how deep a method may read its params. A method that
// reads past it, or past the traversal limit, gets an error, which fails
// that call: the connection carries on, and so do the others.
func TestDepthLimitFailsTheCall(t *testing.T) {
	for _, lim := range []struct {
		name         string
		depth        uint // Options.DepthLimit; zero: the default, 64
		within, past int  // nestings below and beyond it
	}{{"default", 0, 50, 100}, {"DepthLimit", 20, 10, 30}} {
		t.Run(lim.name, func(t *testing.T) {
			log, logBuf := newLogger(t, "server")
			path, _, _ := listen(t, func(c *protocol.Conn) capnp.Client {
				s := &depthSlow{}
				return protocol.NewServer(testschema.Slow_Methods(nil, s), s, nil)
			}, &protocol.Options{Logger: log, Limits: protocol.Limits{DepthLimit: lim.depth}})
			ctx := testContext(t)
			_, other := connectSlow(t, path, nil)

			nc := dial(t, path)
			dec := capnp.NewDecoder(nc)
			nc.SetReadDeadline(time.Now().Add(patience))
			// returned waits for the Return to question q and gives its result
			// or exception.
			returned := func(q uint32) (string, error) {
				t.Helper()
				for {
					msg, err := dec.Decode()
					if err != nil {
						t.Fatalf("waiting for the return of question %d: %v", q, err)
					}
					m, err := rpccp.ReadRootMessage(msg)
					if err != nil || m.Which() != rpccp.Message_Which_return {
						continue
					}
					r, err := m.Return()
					if err != nil || r.AnswerId() != q {
						continue
					}
					switch r.Which() {
					case rpccp.Return_Which_results:
						p, _ := r.Results()
						content, _ := p.Content()
						s, _ := content.Struct().Ptr(0)
						return s.Text(), nil
					case rpccp.Return_Which_exception:
						e, _ := r.Exception()
						reason, _ := e.Reason()
						return "", errors.New(reason)
					}
					return "", fmt.Errorf("return of kind %v", r.Which())
				}
			}
			mustWrite(t, nc, rpcmsg.Frame(rpcmsg.Bootstrap(0)))
			for _, tc := range []struct {
				nesting int
				fails   bool
			}{{lim.within, false}, {lim.past, true}} {
				q := uint32(tc.nesting)
				mustWrite(t, nc, rawCall(q, 0, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
					root, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 1})
					if err != nil {
						return capnp.Ptr{}, err
					}
					cur := root
					for range tc.nesting {
						next, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 1})
						if err != nil {
							return capnp.Ptr{}, err
						}
						if err := cur.SetPtr(0, next.ToPtr()); err != nil {
							return capnp.Ptr{}, err
						}
						cur = next
					}
					return root.ToPtr(), nil
				}))
				_, err := returned(q)
				switch {
				case tc.fails && (err == nil || !strings.Contains(err.Error(), "depth limit")):
					t.Errorf("params nested %d deep: %v, want an error naming the depth limit", tc.nesting, err)
				case !tc.fails && err != nil:
					t.Errorf("params nested %d deep: %v", tc.nesting, err)
				}
			}
			// The traversal limit likewise bounds a method's reading: params
			// whose text field points to a list counted as 4 GiB.
			mustWrite(t, nc, rawCall(2, 0, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
				root, err := capnp.NewStruct(seg, capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return capnp.Ptr{}, err
				}
				return root.ToPtr(), root.SetPtr(0, capnp.List(capnp.NewVoidList(seg, 1<<29-1)).ToPtr())
			}))
			if _, err := returned(2); err == nil || !strings.Contains(err.Error(), "traversal limit") {
				t.Errorf("params with a list counted as 4 GiB: %v, want an error naming the traversal limit", err)
			}
			mustWrite(t, nc, rawEcho(1, 0, "same connection"))
			if got, err := returned(1); err != nil || got != "same connection" {
				t.Errorf("echo on the same connection after the failed call = %q, %v", got, err)
			}
			if got, err := slowEcho(ctx, other, "other"); err != nil || got != "other" {
				t.Errorf("other client's echo = %q, %v", got, err)
			}
			if lines := logBuf.Lines("connection closed"); len(lines) != 0 {
				t.Errorf("a connection closed: %q", lines)
			}
		})
	}
}
