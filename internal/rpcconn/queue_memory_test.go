package rpcconn

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// A peer that sends calls and never reads its replies makes this side
// queue them until the outgoing queue passes twice MaxQueueBytes; then the
// reader stops reading, and the peer's writes stall. The queue's limit
// must count the memory its messages hold, not only the bytes they use:
// a canceled Return uses about 60 bytes but holds a pooled buffer of a
// kilobyte or more, and counting 60 let such a peer make this side hold
// tens of times the limit (hundreds of MiB through a node's -ipcbind).
func TestNeverReadingPeerQueueBounded(t *testing.T) {
	const maxQueue = 1 << 20
	// The socket's default send buffer: a larger one holds more of the
	// replies in the kernel, so more calls are taken (and their answers
	// recorded, up to MaxTableSize) before the queue fills.
	defer sendBuffer.Store(sendBuffer.Swap(0))
	_, p, _ := newRawPair(t, &Options{MaxQueueBytes: maxQueue, MaxCalls: 1 << 16, MaxTableSize: 1 << 20})
	id := p.bootstrap(0)
	p.send(callTo(1, importedCap(id), schema.Init_TypeID, 0, nil))
	arg := func(s capnp.Struct) { schema.Echo_echo_Params(s).SetEcho("x") }

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	q := uint32(2)
	stalled := false
	for !stalled && q < 1<<20 {
		var buf []byte
		for range 500 {
			// Each call finished at once: its Return is a small
			// "canceled" one, or results.
			buf = append(buf, buildFrame(callTo(q, promisedAnswer(1, 0), schema.Echo_TypeID, 0, arg))...)
			buf = append(buf, buildFrame(finish(q))...)
			q++
		}
		p.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err := p.nc.Write(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			stalled = true
		} else if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if !stalled {
		t.Fatalf("this side took %d calls without its replies being read", q)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("reader stopped after %d calls; heap in use grew by %d KiB (queue limit %d KiB)", q-2, grew>>10, maxQueue>>10)
	if grew > 8*maxQueue {
		t.Fatalf("heap in use grew by %d KiB while the queue limit is %d KiB", grew>>10, maxQueue>>10)
	}
}
