package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/process"
)

// The raw baseline: the least a call across the socket can cost. A frame is
// a 4-byte little-endian payload length, an op byte and the payload; each
// frame goes out in one write. The child echoes 'e' frames back whole,
// counts and drops 's' frames, answers 'd' with the count and 'q' with its
// stats.
const (
	opEcho  = 'e'
	opSink  = 's'
	opDone  = 'd'
	opStats = 'q'

	rawHeader = 5
	// rawMaxPayload bounds a frame, as MaxMessageSize bounds a Cap'n
	// Proto message.
	rawMaxPayload = 64 << 20
	rawBuffer     = 64 << 10 // bufio size on both sides
)

// newFrame returns a frame with the given op and a payload of n bytes.
func newFrame(op byte, n int) []byte {
	f := make([]byte, rawHeader+n)
	binary.LittleEndian.PutUint32(f, uint32(n))
	f[4] = op
	for i := rawHeader; i < len(f); i++ {
		f[i] = byte('a' + i%26)
	}
	return f
}

// readFrame reads one frame into buf, growing it if needed, and returns
// the frame (header included).
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	if cap(buf) < rawHeader {
		buf = make([]byte, rawHeader, 512)
	}
	buf = buf[:rawHeader]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	n := binary.LittleEndian.Uint32(buf)
	if n > rawMaxPayload {
		return buf, fmt.Errorf("frame of %d bytes, more than %d", n, rawMaxPayload)
	}
	size := rawHeader + int(n)
	if cap(buf) < size {
		buf = append(buf, make([]byte, int(n))...)
	}
	buf = buf[:size]
	_, err := io.ReadFull(r, buf[rawHeader:])
	return buf, err
}

// rawChildMain is the raw child: frames in, frames out, until the socket
// closes.
func rawChildMain() int {
	conn, err := spawnedConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw child:", err)
		return 1
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, rawBuffer)
	var buf []byte
	var count, bytes uint64
	for {
		buf, err = readFrame(r, buf)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "raw child: read:", err)
			return 1
		}
		var reply []byte
		switch buf[4] {
		case opEcho:
			reply = buf
		case opSink:
			count++
			bytes += uint64(len(buf) - rawHeader)
			probe.Goroutines.Sample()
			continue
		case opDone:
			reply = newFrame(opDone, 16)
			binary.LittleEndian.PutUint64(reply[rawHeader:], count)
			binary.LittleEndian.PutUint64(reply[rawHeader+8:], bytes)
		case opStats:
			reply = newFrame(opStats, 8*probe.NumFields)
			for i, v := range probe.Own().Fields() {
				binary.LittleEndian.PutUint64(reply[rawHeader+8*i:], v)
			}
		default:
			fmt.Fprintf(os.Stderr, "raw child: unknown op %q\n", buf[4])
			return 1
		}
		if _, err := conn.Write(reply); err != nil {
			fmt.Fprintln(os.Stderr, "raw child: write:", err)
			return 1
		}
	}
}

// spawnedConn is how the baseline children take their socket: exactly as
// a spawned executable would, with process.CheckSpawned and SocketConn.
func spawnedConn() (net.Conn, error) {
	fd, spawned, err := process.CheckSpawned(os.Args)
	if err != nil {
		return nil, err
	}
	if !spawned {
		return nil, errors.New("started without -ipcfd")
	}
	return process.SocketConn(fd)
}

// rawPeer is the parent's side of a raw child.
type rawPeer struct {
	child *process.Child
	conn  net.Conn
	r     *bufio.Reader
	buf   []byte
}

func startRaw(tb testing.TB) *rawPeer {
	tb.Helper()
	child, conn := spawnChild(tb, kindRaw)
	return &rawPeer{child: child, conn: conn, r: bufio.NewReaderSize(conn, rawBuffer)}
}

// echo sends an echo frame and waits for it to come back.
func (p *rawPeer) echo(frame []byte) error {
	if _, err := p.conn.Write(frame); err != nil {
		return err
	}
	var err error
	p.buf, err = readFrame(p.r, p.buf)
	if err != nil {
		return err
	}
	if len(p.buf) != len(frame) || p.buf[len(p.buf)-1] != frame[len(frame)-1] {
		return fmt.Errorf("echo: got %d bytes back, sent %d", len(p.buf), len(frame))
	}
	return nil
}

// push sends a sink frame; nothing comes back.
func (p *rawPeer) push(frame []byte) error {
	_, err := p.conn.Write(frame)
	return err
}

// done returns how many sink frames and payload bytes the child has had.
func (p *rawPeer) done() (count, bytes uint64, err error) {
	if _, err := p.conn.Write(newFrame(opDone, 0)); err != nil {
		return 0, 0, err
	}
	p.buf, err = readFrame(p.r, p.buf)
	if err != nil {
		return 0, 0, err
	}
	if len(p.buf) != rawHeader+16 || p.buf[4] != opDone {
		return 0, 0, fmt.Errorf("done: bad reply of %d bytes", len(p.buf))
	}
	return binary.LittleEndian.Uint64(p.buf[rawHeader:]), binary.LittleEndian.Uint64(p.buf[rawHeader+8:]), nil
}

func (p *rawPeer) stats() (probe.Stats, error) {
	if _, err := p.conn.Write(newFrame(opStats, 0)); err != nil {
		return probe.Stats{}, err
	}
	var err error
	p.buf, err = readFrame(p.r, p.buf)
	if err != nil {
		return probe.Stats{}, err
	}
	if len(p.buf) != rawHeader+8*probe.NumFields || p.buf[4] != opStats {
		return probe.Stats{}, fmt.Errorf("stats: bad reply of %d bytes", len(p.buf))
	}
	v := make([]uint64, probe.NumFields)
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(p.buf[rawHeader+8*i:])
	}
	return probe.FromFields(v)
}

// close closes the socket, on which the child exits, and returns an
// error unless it exited 0.
func (p *rawPeer) close() error {
	return stopChild(p.child, p.conn)
}
