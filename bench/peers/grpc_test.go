package peers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gomultiprocess/multiprocess/bench/internal/probe"
	"github.com/gomultiprocess/multiprocess/bench/peers/internal/peerpb"
)

// The gRPC peer, run as hashicorp/go-plugin runs a gRPC plugin: the child
// listens on a unix socket in a temporary directory and announces it with
// go-plugin's handshake line on stdout
// (CORE-VERSION|APP-VERSION|NETWORK|ADDRESS|PROTOCOL); the parent reads
// the line, dials the socket with go-plugin's options (a custom unix
// dialer, no TLS, no limit on message sizes) and calls; it stops the child
// with a Shutdown call, as go-plugin's GRPCController does, and the
// child's stdin is its lifeline, as go-plugin's stdio is: the child stops
// serving when it closes. go-plugin itself (its broker, its stdio and log
// forwarding, its health service) is not used: it adds goroutines and
// start-up time but nothing to a call.

// handshakeTimeout bounds the wait for the child's handshake line
// (go-plugin's StartTimeout is a minute).
const handshakeTimeout = time.Minute

// grpcChildMain serves peerpb.Bench on a unix socket until Shutdown is
// called or stdin closes.
func grpcChildMain() int {
	dir, err := os.MkdirTemp("", "plugin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc child:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "plugin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc child:", err)
		return 1
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(math.MaxInt32), grpc.MaxSendMsgSize(math.MaxInt32))
	svc := &grpcBench{srv: srv}
	peerpb.RegisterBenchServer(srv, svc)
	fmt.Printf("1|1|unix|%s|grpc\n", l.Addr())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the lifeline; the parent closes stdin after Shutdown too
		defer wg.Done()
		_, _ = io.Copy(io.Discard, os.Stdin)
		srv.Stop()
	}()
	err = srv.Serve(l)
	svc.stopping.Wait()
	wg.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc child: serve:", err)
		return 1
	}
	return 0
}

// grpcBench is the child's service.
type grpcBench struct {
	peerpb.UnimplementedBenchServer
	srv      *grpc.Server
	stopping sync.WaitGroup // the GracefulStop that Shutdown started
}

func (*grpcBench) Echo(_ context.Context, in *peerpb.Text) (*peerpb.Text, error) {
	return &peerpb.Text{Text: in.GetText()}, nil
}

func (*grpcBench) EchoData(_ context.Context, in *peerpb.Data) (*peerpb.Data, error) {
	return &peerpb.Data{Data: in.GetData()}, nil
}

// Push counts the messages of one stream and says what arrived when the
// client closes its side.
func (*grpcBench) Push(stream grpc.ClientStreamingServer[peerpb.Data, peerpb.PushSummary]) error {
	var sum peerpb.PushSummary
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&sum)
		}
		if err != nil {
			return err
		}
		sum.Count++
		sum.Bytes += uint64(len(m.GetData()))
		probe.Goroutines.Sample()
	}
}

func (*grpcBench) Stats(context.Context, *peerpb.Empty) (*peerpb.StatsReply, error) {
	return &peerpb.StatsReply{Fields: probe.Own().Fields()}, nil
}

// Shutdown stops the server once this call has returned: GracefulStop
// waits for the calls in progress, this one included.
func (s *grpcBench) Shutdown(context.Context, *peerpb.Empty) (*peerpb.Empty, error) {
	s.stopping.Add(1)
	go func() {
		defer s.stopping.Done()
		s.srv.GracefulStop()
	}()
	return &peerpb.Empty{}, nil
}

// grpcPeer is the parent's side of a gRPC child.
type grpcPeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *os.File      // the read end of the child's stdout
	copied chan struct{} // closed when the rest of out has gone to stderr; nil until the handshake is read
	conn   *grpc.ClientConn
	client peerpb.BenchClient
	closed bool
}

// startGRPC starts the test binary at path as a gRPC child, reads its
// handshake and makes a client for its socket. The connection is made on
// the first call, as go-plugin's is made by its blocking dial.
func startGRPC(path string) (_ *grpcPeer, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	cmd := exec.Command(path)
	cmd.Env, cmd.Stdout, cmd.Stderr = childEnv(kindGRPC), w, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		r.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, err
	}
	p := &grpcPeer{cmd: cmd, stdin: stdin, out: r}
	defer func() {
		if err != nil {
			p.kill()
		}
	}()
	w.Close()
	br := bufio.NewReader(r)
	if err := r.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return nil, err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("grpc child's handshake: %w", err)
	}
	f := strings.Split(strings.TrimSpace(line), "|")
	if len(f) != 5 || f[0] != "1" || f[2] != "unix" || f[4] != "grpc" {
		return nil, fmt.Errorf("grpc child's handshake: %q", line)
	}
	addr := f[3]
	if err := r.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	p.copied = make(chan struct{})
	go func() {
		defer close(p.copied)
		_, _ = io.Copy(os.Stderr, br)
	}()
	p.conn, err = grpc.NewClient("passthrough:///plugin",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		return nil, err
	}
	p.client = peerpb.NewBenchClient(p.conn)
	return p, nil
}

func (p *grpcPeer) echo(ctx context.Context, text string) error {
	out, err := p.client.Echo(ctx, &peerpb.Text{Text: text})
	if err != nil {
		return err
	}
	return checkReply(out.GetText(), text)
}

func (p *grpcPeer) echoData(ctx context.Context, data []byte) error {
	out, err := p.client.EchoData(ctx, &peerpb.Data{Data: data})
	if err != nil {
		return err
	}
	return checkReply(out.GetData(), data)
}

// push streams n messages of data on one client-streaming call and
// returns what the child says arrived.
func (p *grpcPeer) push(ctx context.Context, n int, data []byte) (count, bytes uint64, err error) {
	stream, err := p.client.Push(ctx)
	if err != nil {
		return 0, 0, err
	}
	msg := &peerpb.Data{Data: data}
	for range n {
		if err := stream.Send(msg); err != nil {
			// The call's status says why; CloseAndRecv returns it.
			break
		}
	}
	sum, err := stream.CloseAndRecv()
	if err != nil {
		return 0, 0, err
	}
	return sum.GetCount(), sum.GetBytes(), nil
}

func (p *grpcPeer) stats(ctx context.Context) (probe.Stats, error) {
	out, err := p.client.Stats(ctx, &peerpb.Empty{})
	if err != nil {
		return probe.Stats{}, err
	}
	return probe.FromFields(out.GetFields())
}

// close stops the child as go-plugin's Client.Kill does (a Shutdown call,
// then a bounded wait, then a kill), closes the client, and returns an
// error unless the child exited 0. It is idempotent.
func (p *grpcPeer) close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, shutErr := p.client.Shutdown(ctx, &peerpb.Empty{})
	cancel()
	closeErr := p.conn.Close()
	p.stdin.Close()
	waited := make(chan error, 1)
	go func() { waited <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		err = fmt.Errorf("did not exit within 5s of Shutdown: %w", <-waited)
	}
	<-p.copied
	p.out.Close()
	if err != nil {
		return fmt.Errorf("grpc child %d: %w", p.cmd.Process.Pid, err)
	}
	return errors.Join(shutErr, closeErr)
}

// kill ends a child whose start failed.
func (p *grpcPeer) kill() {
	if p.conn != nil {
		p.conn.Close()
	}
	p.stdin.Close()
	p.cmd.Process.Kill()
	p.cmd.Wait()
	if p.copied != nil {
		<-p.copied
	}
	p.out.Close()
}
