package protocol_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/protocol"
	"github.com/gomultiprocess/multiprocess/protocol/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/protocol/internal/testschema"
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
			opts: protocol.Options{MaxMessageSize: 64 << 10},
			send: func(t *testing.T, nc net.Conn) {
				mustWrite(t, nc, rawBootstrap(t, 0))
				mustWrite(t, nc, rawEcho(t, 1, 0, strings.Repeat("x", 128<<10)))
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
				mustWrite(t, nc, rawBootstrap(t, 0))
				mustWrite(t, nc, rawCall(t, 1, 0, testschema.Slow_TypeID, 1, func(seg *capnp.Segment) (capnp.Ptr, error) {
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
				b = append(b, rawBootstrap(t, 0)...)
				for q := uint32(1); q <= rpcconn.DefaultMaxCalls+1; q++ {
					b = append(b, rawSleep(t, q, 0, uint32(patience/time.Millisecond), 0)...)
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
				mustWrite(t, nc, rawBootstrap(t, 0))
				for q := uint32(1); q <= 3; q++ {
					if _, err := nc.Write(rawSleep(t, q, 0, uint32(patience/time.Millisecond), 22<<20)); err != nil {
						return // the server hung up
					}
				}
			},
			reading: true,
			want:    "more than 67108864 bytes of calls in flight",
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
				b = append(b, rawBootstrap(t, 0)...)
				for q := uint32(1); q <= 16; q++ {
					b = append(b, rawEcho(t, q, 0, strings.Repeat("r", 256<<10))...)
				}
				mustWrite(t, nc, b)
			},
			want: "peer stopped reading: it took no byte for 200ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFDs(t)
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
				return len(logBuf.lines("level=INFO", `msg="connection closed"`, "reason=error", tc.want)) == 1
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
