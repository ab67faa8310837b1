package bench

import (
	"fmt"
	"net/rpc"
	"os"
	"sync/atomic"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/process"
)

// NetRPC is the service the net/rpc child serves: the same operations as
// the raw child and our Echo and Sink. (net/rpc wants it exported.)
type NetRPC struct {
	count, bytes atomic.Uint64
}

// Echo returns its argument.
func (*NetRPC) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// Push counts its argument and drops it.
func (s *NetRPC) Push(args []byte, _ *struct{}) error {
	s.count.Add(1)
	s.bytes.Add(uint64(len(args)))
	probe.Goroutines.Sample()
	return nil
}

// Done returns how many pushes and payload bytes arrived.
func (s *NetRPC) Done(_ struct{}, reply *[2]uint64) error {
	*reply = [2]uint64{s.count.Load(), s.bytes.Load()}
	return nil
}

// Stats returns the child's stats as probe.Stats.fields (net/rpc wants an
// exported or unnamed type).
func (*NetRPC) Stats(_ struct{}, reply *[]uint64) error {
	*reply = probe.Own().Fields()
	return nil
}

// netrpcChildMain serves NetRPC on the socket until it closes.
func netrpcChildMain() int {
	conn, err := spawnedConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netrpc child:", err)
		return 1
	}
	srv := rpc.NewServer()
	if err := srv.Register(&NetRPC{}); err != nil {
		fmt.Fprintln(os.Stderr, "netrpc child:", err)
		return 1
	}
	srv.ServeConn(conn) // returns when the parent closes the socket
	return 0
}

// netrpcPeer is the parent's side of a net/rpc child.
type netrpcPeer struct {
	child  *process.Child
	client *rpc.Client
}

func startNetRPC(tb testing.TB) *netrpcPeer {
	tb.Helper()
	child, conn := spawnChild(tb, kindNetRPC)
	return &netrpcPeer{child: child, client: rpc.NewClient(conn)}
}

func (p *netrpcPeer) echo(payload []byte) error {
	var reply []byte
	if err := p.client.Call("NetRPC.Echo", payload, &reply); err != nil {
		return err
	}
	if len(reply) != len(payload) || reply[len(reply)-1] != payload[len(payload)-1] {
		return fmt.Errorf("echo: got %d bytes back, sent %d", len(reply), len(payload))
	}
	return nil
}

func (p *netrpcPeer) done() (count, bytes uint64, err error) {
	var reply [2]uint64
	err = p.client.Call("NetRPC.Done", struct{}{}, &reply)
	return reply[0], reply[1], err
}

func (p *netrpcPeer) stats() (probe.Stats, error) {
	var v []uint64
	if err := p.client.Call("NetRPC.Stats", struct{}{}, &v); err != nil {
		return probe.Stats{}, err
	}
	return probe.FromFields(v)
}

// close closes the client and its socket, on which the child exits, and
// returns an error unless it exited 0.
func (p *netrpcPeer) close() error {
	return stopChild(p.child, p.client)
}
