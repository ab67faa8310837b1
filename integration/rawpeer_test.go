package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/rpcmsg"
)

// rawPeer speaks Cap'n Proto RPC by hand on a real socket, to send what a
// well-behaved peer never would.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
	r  *rpcmsg.Reader
}

// dialRaw connects to the unix socket at path. The socket is closed at
// the end of the test.
func dialRaw(t *testing.T, path string) *rawPeer {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRawPeer(t, nc)
}

func newRawPeer(t *testing.T, nc net.Conn) *rawPeer {
	return &rawPeer{t: t, nc: nc, r: rpcmsg.NewReader(t, nc, deadline, 64<<20)}
}

// write sends b whole, or returns the error (the node may close first).
func (p *rawPeer) write(b []byte) error {
	p.nc.SetWriteDeadline(time.Now().Add(deadline))
	_, err := p.nc.Write(b)
	return err
}

// mustWrite is write for bytes that the node must take.
func (p *rawPeer) mustWrite(b []byte) {
	p.t.Helper()
	if err := p.write(b); err != nil {
		p.t.Fatalf("raw write: %v", err)
	}
}

func (p *rawPeer) send(build func(rpccp.Message)) { p.t.Helper(); p.mustWrite(rpcmsg.Frame(build)) }

// recv reads the next message.
func (p *rawPeer) recv() (rpccp.Message, error) { return p.r.Recv() }

// expect reads messages until one of kind w arrives.
func (p *rawPeer) expect(w rpccp.Message_Which) rpccp.Message { p.t.Helper(); return p.r.Expect(w) }

// expectReturn reads until the Return for question qid and returns it.
func (p *rawPeer) expectReturn(qid uint32) rpccp.Return {
	p.t.Helper()
	for {
		m := p.expect(rpccp.Message_Which_return)
		r, _ := m.Return()
		if r.AnswerId() == qid {
			return r
		}
	}
}

// bootstrap asks for the node's Init as question qid and returns its
// export ID.
func (p *rawPeer) bootstrap(qid uint32) uint32 {
	p.t.Helper()
	p.send(rpcmsg.Bootstrap(qid))
	r := p.expectReturn(qid)
	res, err := r.Results()
	if err != nil {
		p.t.Fatalf("bootstrap: return %v: %v", r.Which(), err)
	}
	ct, _ := res.CapTable()
	if ct.Len() != 1 || ct.At(0).Which() != rpccp.CapDescriptor_Which_senderHosted {
		p.t.Fatalf("bootstrap: cap table %v", ct)
	}
	return ct.At(0).SenderHosted()
}

// end reads until the node ends the connection and returns the reason of
// the Abort it sent first, if any. A connection still open after the
// deadline fails the test.
func (p *rawPeer) end() (abort string) {
	p.t.Helper()
	for {
		m, err := p.recv()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.t.Fatalf("the node kept the connection open for %s", deadline)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
				p.t.Fatalf("reading until the end: %v", err)
			}
			return abort
		}
		if m.Which() == rpccp.Message_Which_abort {
			abort = rpcmsg.AbortReason(m)
		}
	}
}

// connID waits for the "connection opened" line of the connection that
// the node accepted after its output had from bytes, and returns its id.
func connID(t *testing.T, out *output, from int) string {
	t.Helper()
	re := regexp.MustCompile(`msg="connection opened" .*conn\.id=(\d+)`)
	end := time.Now().Add(deadline)
	for {
		s := out.String()
		if m := re.FindStringSubmatch(s[from:]); m != nil {
			return m[1]
		}
		if time.Now().After(end) {
			t.Fatalf("no new connection logged; output:\n%s", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// afterOpened waits until the node's output has n "connection opened"
// lines, and returns the offset right after the nth: a connection opened
// from then on is logged after it. The node's log reaches the test through
// a pipe, so the line of a connection that has been served already may
// still be on its way.
func afterOpened(t *testing.T, out *output, n int) int {
	t.Helper()
	re := regexp.MustCompile(`msg="connection opened" .*\n`)
	end := time.Now().Add(deadline)
	for {
		s := out.String()
		if locs := re.FindAllStringIndex(s, n); len(locs) == n {
			return locs[n-1][1]
		}
		if time.Now().After(end) {
			t.Fatalf("the node logged fewer than %d connections; output:\n%s", n, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procStatusKiB reads a field in KiB (VmRSS, VmHWM) from /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
