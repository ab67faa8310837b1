package rpcconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// claim64MiB is the header of a frame that claims the largest message
// allowed by default, in one segment or in four.
func claim64MiB(segments int) []byte {
	words := uint32((DefaultMaxMessageSize - 24) / 8)
	if segments == 1 {
		return rpcmsg.Header(words)
	}
	sizes := make([]uint32, segments)
	for i := range sizes {
		sizes[i] = words / uint32(segments)
	}
	return rpcmsg.Header(sizes...)
}

// allocated returns the bytes allocated while f ran (TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// heapInUse collects garbage once (what pools keep survives one
// collection) and returns the bytes of heap in use.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A frame that claims 64 MiB and is cut short costs a few times the
// bytes that came, not the claim, however many times it happens.
func TestClaimCostsWhatArrives(t *testing.T) {
	lim := (&Options{}).limits()
	for _, segs := range []int{1, 4} {
		for _, sent := range []int{0, 8, 1000, 100 << 10, 1 << 20} {
			t.Run(fmt.Sprintf("%dseg/%dB", segs, sent), func(t *testing.T) {
				frame := append(claim64MiB(segs), make([]byte, sent)...)
				n := uint64(200)
				if sent >= 100<<10 {
					n = 10 // poisoning what they drop is slow under -race
				}
				src := bytes.NewReader(frame)
				br := bufio.NewReaderSize(src, 64<<10)
				grew := allocated(func() {
					for range int(n) {
						src.Reset(frame)
						br.Reset(src)
						if _, _, err := newFrameReader(br, &lim).next(); !errors.Is(err, io.ErrUnexpectedEOF) {
							t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
						}
					}
				})
				// A buffer is at most 5 times the bytes received (or
				// about minFrameChunk), and the ones it replaced add a
				// third; each is rounded up to its size class.
				per := grew / n
				bound := uint64(8*max(sent, minFrameChunk) + 4<<10)
				t.Logf("%d claims of 64 MiB, %d bytes sent: %d bytes allocated per claim", n, sent, per)
				if per > bound {
					t.Fatalf("a claim of 64 MiB with %d bytes sent allocated %d bytes, want at most %d", sent, per, bound)
				}
			})
		}
	}
}

// Frames delivered in pieces, from a few bytes over minFrameChunk to
// tens of MiB, in one segment and in several, are read byte-exact while
// their buffer grows, with the bytes allocated for the first (buffers
// replaced as it arrived) bounded by 1.7 times the frame (a third more,
// and size classes up to a quarter larger), and the second of the same
// size on the connection read into a buffer of its size at once.
func TestGrowingFrameReadWhole(t *testing.T) {
	lim := (&Options{}).limits()
	for _, n := range []int{minFrameChunk + 8, 100 << 10, 1<<20 + 24, 24 << 20} {
		for _, segs := range []int{1, 3} {
			t.Run(fmt.Sprintf("%dB/%dseg", n, segs), func(t *testing.T) {
				arena := capnp.SingleSegment(nil)
				if segs > 1 {
					arena = capnp.MultiSegment(nil)
				}
				msg, seg, err := capnp.NewMessage(arena)
				if err != nil {
					t.Fatal(err)
				}
				l, err := capnp.NewPointerList(seg, int32(segs))
				if err != nil {
					t.Fatal(err)
				}
				if err := msg.SetRoot(l.ToPtr()); err != nil {
					t.Fatal(err)
				}
				for i := range segs {
					// A segment of its own for each list, in a
					// multi-segment arena, once the first is full.
					d, err := capnp.NewData(seg, make([]byte, n/segs))
					if err != nil {
						t.Fatal(err)
					}
					b := d.ToPtr().Data()
					for j := range b {
						b[j] = byte(i + j*7)
					}
					if err := l.Set(i, d.ToPtr()); err != nil {
						t.Fatal(err)
					}
				}
				frame, err := msg.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				want, err := capnp.Unmarshal(bytes.Clone(frame))
				if err != nil {
					t.Fatal(err)
				}
				// Two frames, delivered 3000 bytes per read.
				br := bufio.NewReaderSize(&trickle{r: bytes.NewReader(append(bytes.Clone(frame), frame...)), n: 3000}, 64<<10)
				fr := newFrameReader(br, &lim)
				for round := range 2 {
					var got *capnp.Message
					var size uint64
					grew := allocated(func() {
						got, size, err = fr.next()
					})
					if err != nil {
						t.Fatalf("frame %d: %v", round, err)
					}
					if size != uint64(len(frame)) || got.NumSegments() != want.NumSegments() {
						t.Fatalf("frame %d: %d bytes in %d segments, want %d in %d", round, size, got.NumSegments(), len(frame), want.NumSegments())
					}
					for i := int64(0); i < got.NumSegments(); i++ {
						a, _ := got.Segment(capnp.SegmentID(i))
						b, _ := want.Segment(capnp.SegmentID(i))
						if !bytes.Equal(a.Data(), b.Data()) {
							t.Fatalf("frame %d: segment %d differs", round, i)
						}
					}
					got.Release()
					t.Logf("frame %d of %d bytes: %d bytes allocated", round, len(frame), grew)
					bound := uint64(len(frame))*17/10 + 16<<10
					if round == 1 {
						bound = uint64(len(frame))*5/4 + 16<<10
					}
					if grew > bound {
						t.Fatalf("frame %d of %d bytes: %d bytes allocated, want at most %d", round, len(frame), grew, bound)
					}
				}
			})
		}
	}
}

// trickle passes on at most n bytes per Read, as a socket may.
type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

// A buffer goes back to its pool only once a frame has filled it: those
// of a frame cut short are left to the collector.
func TestUnfilledBufferNotPooled(t *testing.T) {
	const n = 100 << 10
	for _, filled := range []bool{false, true} {
		seen := 0
		for range 100 {
			b := getRecvBuf(n)
			b.filled = filled
			p := &b.b[:1][0]
			putRecvBuf(b)
			c := getRecvBuf(n)
			if &c.b[:1][0] == p {
				seen++
			}
			c.filled = true
			putRecvBuf(c)
		}
		switch {
		case !filled && seen > 0:
			t.Fatalf("a buffer never filled came back from the pool %d times in 100", seen)
		case filled && seen == 0:
			// sync.Pool may drop what is put (at random under -race),
			// but not every time.
			t.Fatalf("a filled buffer never came back from the pool in 100 tries")
		}
	}
}

// probeConn records how far the connection's reader has read and
// whether it is waiting in Read, so that a test knows when a stalled
// peer's bytes have all been taken in.
type probeConn struct {
	net.Conn
	read    atomic.Int64
	waiting atomic.Bool
}

func (c *probeConn) Read(p []byte) (int, error) {
	c.waiting.Store(true)
	n, err := c.Conn.Read(p)
	c.waiting.Store(false)
	c.read.Add(int64(n))
	return n, err
}

// 200 peers each claim 64 MiB (in one segment or in four), send 8
// bytes and stall, 20 at a time, then vanish. While they stall, the
// connections hold about what they hold anyway (read and write buffers)
// and a minFrameChunk each; in all they allocate far less than one
// claim, and when they have gone the heap is back where it was (no
// buffer of theirs stays in the pools). The same peers with honest
// claims (16 bytes, 8 sent) are measured alongside, to tell the cost of
// a claim from the cost of a connection.
func TestStalledClaimsHoldWhatArrived(t *testing.T) {
	const waves, perWave = 10, 20
	run := func(header func(i int) []byte) (held, total, left uint64) {
		runtime.GC() // what the pools kept before goes
		base := heapInUse()
		total = allocated(func() {
			for w := range waves {
				var conns []*Conn
				var peers []net.Conn
				var probes []*probeConn
				for i := range perWave {
					a, b := socketPair(t)
					p := &probeConn{Conn: a}
					conns = append(conns, NewConn(p, nil))
					probes = append(probes, p)
					peers = append(peers, b)
					if _, err := b.Write(append(header(w*perWave+i), 1, 2, 3, 4, 5, 6, 7, 8)); err != nil {
						t.Fatal(err)
					}
				}
				deadline := time.Now().Add(10 * time.Second)
				for i, p := range probes {
					want := int64(len(header(w*perWave+i)) + 8)
					for p.read.Load() != want || !p.waiting.Load() {
						if time.Now().After(deadline) {
							t.Fatalf("reader %d read %d bytes of %d", i, p.read.Load(), want)
						}
						time.Sleep(time.Millisecond)
					}
				}
				if h := heapInUse(); h > base && h-base > held {
					held = h - base
				}
				for i := range conns {
					peers[i].Close()
					<-conns[i].Done()
					conns[i].Close()
				}
			}
		})
		if h := heapInUse(); h > base {
			left = h - base
		}
		return held, total, left
	}
	honestHeld, honestTotal, _ := run(func(int) []byte { return rpcmsg.Header(2) })
	held, total, left := run(func(i int) []byte { return claim64MiB(1 + 3*(i%2)) })
	const n = waves * perWave
	t.Logf("%d peers claiming 64 MiB, sending 8 bytes: %d KiB held by %d stalled at once (honest: %d KiB), %d KiB allocated in all (honest: %d KiB), %d KiB left after",
		n, held>>10, perWave, honestHeld>>10, total>>10, honestTotal>>10, left>>10)
	if total > 64<<20 {
		t.Errorf("%d claims of 64 MiB allocated %d MiB, want less than 64 MiB", n, total>>20)
	}
	if extra := (int64(total) - int64(honestTotal)) / n; extra > 4*minFrameChunk {
		t.Errorf("a claim of 64 MiB allocated %d bytes more than an honest frame, want at most %d", extra, 4*minFrameChunk)
	}
	if held > honestHeld+perWave*4*minFrameChunk+8<<20 {
		t.Errorf("%d stalled claims held %d KiB (honest frames: %d KiB)", perWave, held>>10, honestHeld>>10)
	}
	if left > 8<<20 {
		t.Errorf("heap in use %d KiB higher once the peers had gone", left>>10)
	}
}

// A recorded session replayed with a few bytes changed, cut or repeated,
// each on a new connection to one listener, as a fuzzer or a broken
// client does to a node's -ipcbind socket: the heap must not grow with
// the number of connections (it grew by hundreds of MiB over 3000 when
// a frame claiming tens of MiB got its buffer at once, and pooled buffers
// of every size class stayed).
func TestReplayMutatedSessions(t *testing.T) {
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	var accepted, ended atomic.Int64
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c := NewConn(nc, &Options{BootstrapClient: newTestServer().client()})
			served.Add(1)
			go func() {
				defer served.Done()
				<-c.Done()
				c.Close()
				ended.Add(1)
			}()
		}
	}()
	defer func() {
		ln.Close()
		served.Wait()
	}()

	session := validSession()
	var starts []int // where each frame begins
	for off := 0; off < len(session); {
		starts = append(starts, off)
		_, _, total, _ := parseHeader(session[off:])
		off += int(total)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	mutate := func() []byte {
		b := bytes.Clone(session)
		for range 1 + rng.IntN(2) {
			switch rng.IntN(4) {
			case 0: // a byte changed anywhere
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			case 1: // a byte of a segment size changed: a claim
				f := starts[rng.IntN(len(starts))]
				if f+8 <= len(b) {
					b[f+5+rng.IntN(3)] = byte(rng.Uint32())
				}
			case 2: // cut
				b = b[:rng.IntN(len(b))]
			case 3: // a range repeated
				i := rng.IntN(len(b))
				j := i + rng.IntN(len(b)-i)
				b = append(b[:j:j], b[i:]...)
			}
		}
		return b
	}
	dialed := int64(0)
	replay := func(n int) {
		for range n {
			nc, err := net.Dial("unix", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			dialed++
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			nc.Write(mutate())
			nc.Close()
		}
		// Every connection served to its end before the heap is
		// measured.
		deadline := time.Now().Add(10 * time.Second)
		for accepted.Load() != dialed || ended.Load() != dialed {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections made, %d accepted, %d ended", dialed, accepted.Load(), ended.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	const warm, rounds, perRound = 100, 3, 200
	replay(warm)
	runtime.GC()
	base := heapInUse()
	var growth []int64
	for range rounds {
		replay(perRound)
		growth = append(growth, int64(heapInUse())-int64(base))
	}
	t.Logf("heap in use after %d connections: %d KiB; growth after each %d more: %v KiB", warm, base>>10, perRound, kib(growth))
	for i, g := range growth {
		if g > 16<<20 {
			t.Fatalf("heap in use grew by %d MiB over %d connections", g>>20, (i+1)*perRound)
		}
	}
}

func kib(v []int64) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = x >> 10
	}
	return out
}
