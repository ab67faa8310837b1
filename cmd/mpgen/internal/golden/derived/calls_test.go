package derived_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/base"
	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/golden/derived"
	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/mp/mptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connect serves boot on one end of a socketpair and returns the
// bootstrap capability of the other: calls on it cross a real
// connection.
func connect(t *testing.T, boot capnp.Client) capnp.Client {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := rpcconn.NewConn(conv(fds[0]), &rpcconn.Options{BootstrapClient: boot})
	client := rpcconn.NewConn(conv(fds[1]), &rpcconn.Options{})
	t.Cleanup(func() {
		client.Close()
		server.Close()
		<-client.Done()
		<-server.Done()
	})
	return client.Bootstrap(context.Background())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type named struct {
	mu   sync.Mutex
	name string
}

func (n *named) Name(context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.name, nil
}

func (n *named) Rename(_ context.Context, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.name = name
	return nil
}

type counter struct {
	named
	total int64
}

func (c *counter) Add(_ context.Context, delta int64) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += delta
	return c.total, nil
}

func (c *counter) Reset(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total = 0
	return nil
}

// source returns its values in order.
type source[T any] struct {
	mu     sync.Mutex
	values []T
}

func (s *source[T]) Next(context.Context) (base.Source_Next_Results[T], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.values) == 0 {
		return base.Source_Next_Results[T]{}, nil
	}
	v := s.values[0]
	s.values = s.values[1:]
	return base.Source_Next_Results[T]{Value: v, More: len(s.values) > 0}, nil
}

func (s *source[T]) Peek(context.Context) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var zero T
	if len(s.values) == 0 {
		return zero, nil
	}
	return s.values[0], nil
}

// buffered is a source that takes values.
type buffered struct{ source[[]byte] }

func (b *buffered) Fill(_ context.Context, v []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.values = append(b.values, slices.Clone(v)) // parameters are borrowed
	return nil
}

// registry implements Registry: a counter with more.
type registry struct {
	counter
	counters map[string]*counter
	texts    *source[string]
}

func newRegistry() *registry {
	r := &registry{counters: map[string]*counter{"a": {named: named{name: "a"}}}, texts: &source[string]{values: []string{"x", "y"}}}
	r.name = "registry"
	return r
}

func (r *registry) Lookup(_ context.Context, name string) (base.Counter, error) {
	c, ok := r.counters[name]
	if !ok {
		return nil, errNotFound
	}
	return c, nil
}

var errNotFound = mp.NewError("derived.notFound", "no such counter")

func (r *registry) Stats(context.Context) (*base.Stats, error) {
	return &base.Stats{Calls: 3, Last: "stats"}, nil
}

func (r *registry) Open(_ context.Context, name string) (derived.Registry_Open_Results, error) {
	c, ok := r.counters[name]
	if !ok {
		c = &counter{named: named{name: name}}
		r.counters[name] = c
	}
	return derived.Registry_Open_Results{Counter: c, Named: &c.named, Created: !ok}, nil
}

func (r *registry) Watch(ctx context.Context, sink derived.EventSink) error {
	for i := range 5 {
		if err := sink.Event(ctx, "tick", uint64(i)); err != nil {
			return err
		}
	}
	n, err := sink.Done(ctx)
	if err != nil {
		return err
	}
	if n != 5 {
		return fmt.Errorf("the sink saw %d events", n)
	}
	return nil
}

func (r *registry) Texts(context.Context) (base.Source[string], error) { return r.texts, nil }

func (r *registry) Made(context.Context) (*derived.Made, error) {
	c := r.counters["a"]
	return &derived.Made{Named: &c.named, Counter: c, Id: 42}, nil
}

// sink records the events it gets.
type sink struct {
	mu     sync.Mutex
	events []string
}

func (s *sink) Event(_ context.Context, kind string, at uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, fmt.Sprintf("%s@%d", kind, at))
	return nil
}

func (s *sink) Done(context.Context) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint32(len(s.events)), nil
}

func registryProxy(t *testing.T, r derived.Registry) derived.Registry {
	t.Helper()
	p := derived.RegistryInterface.FromCapnp(connect(t, derived.RegistryInterface.Capnp(r)))
	if _, ok := p.(*derived.RegistryClient); !ok {
		t.Fatalf("a remote Registry is a %T", p)
	}
	t.Cleanup(func() { mp.Release(p) })
	return p
}

// TestInheritedMethods calls the methods Registry inherits from Counter
// and Named, declared in another package, through its proxy.
func TestInheritedMethods(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	reg := registryProxy(t, newRegistry())
	if n, err := reg.Add(ctx, 5); err != nil || n != 5 {
		t.Fatalf("Add = %d, %v", n, err)
	}
	if n, err := reg.Add(ctx, 2); err != nil || n != 7 {
		t.Fatalf("Add = %d, %v", n, err)
	}
	if err := reg.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := reg.Rename(ctx, "renamed"); err != nil {
		t.Fatal(err)
	}
	if name, err := reg.Name(ctx); err != nil || name != "renamed" {
		t.Fatalf("Name = %q, %v", name, err)
	}
}

// TestCapabilityResults gets capabilities as results, waiting and
// pipelined, one or several, in implicit and named result structs.
func TestCapabilityResults(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	reg := registryProxy(t, newRegistry()).(*derived.RegistryClient)

	c, err := reg.Lookup(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Add(ctx, 3); err != nil || n != 3 {
		t.Fatalf("Add = %d, %v", n, err)
	}
	mp.Release(c)

	pc := reg.LookupPipelined(ctx, "a")
	if n, err := pc.Add(ctx, 1); err != nil || n != 4 {
		t.Fatalf("Add on a pipelined counter = %d, %v", n, err)
	}
	mp.Release(pc)

	_, err = reg.Lookup(ctx, "nope")
	if !errors.Is(err, errNotFound) {
		t.Fatalf("Lookup(nope) = %v, want errNotFound", err)
	}
	bad := reg.LookupPipelined(ctx, "nope")
	if _, err := bad.Add(ctx, 1); !errors.Is(err, errNotFound) {
		t.Fatalf("a call on a failed pipeline = %v, want errNotFound", err)
	}
	mp.Release(bad)

	res, err := reg.Open(ctx, "b")
	if err != nil || !res.Created {
		t.Fatalf("Open = %+v, %v", res, err)
	}
	if name, err := res.Named.Name(ctx); err != nil || name != "b" {
		t.Fatalf("Named.Name = %q, %v", name, err)
	}
	mp.Release(res.Counter)
	mp.Release(res.Named)

	pl := reg.OpenPipelined(ctx, "b")
	if n, err := pl.Counter.Add(ctx, 2); err != nil || n != 2 {
		t.Fatalf("pipelined Counter.Add = %d, %v", n, err)
	}
	if name, err := pl.Named.Name(ctx); err != nil || name != "b" {
		t.Fatalf("pipelined Named.Name = %q, %v", name, err)
	}
	mp.Release(pl.Counter)
	mp.Release(pl.Named)

	made, err := reg.Made(ctx)
	if err != nil || made.Id != 42 {
		t.Fatalf("Made = %+v, %v", made, err)
	}
	if name, err := made.Named.Name(ctx); err != nil || name != "a" {
		t.Fatalf("Made.Named.Name = %q, %v", name, err)
	}
	mp.Release(made.Named)
	mp.Release(made.Counter)
	mpl := reg.MadePipelined(ctx)
	if n, err := mpl.Counter.Add(ctx, 0); err != nil || n != 4 {
		t.Fatalf("pipelined Made.Counter.Add = %d, %v", n, err)
	}
	mp.Release(mpl.Counter)
	mp.Release(mpl.Named)

	st, err := reg.Stats(ctx)
	if err != nil || st.Calls != 3 || st.Last != "stats" {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

// TestCallbacksAndStreams passes a local EventSink to the remote
// registry, which streams events to it.
func TestCallbacksAndStreams(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	reg := registryProxy(t, newRegistry())
	s := &sink{}
	if err := reg.Watch(ctx, s); err != nil {
		t.Fatal(err)
	}
	want := []string{"tick@0", "tick@1", "tick@2", "tick@3", "tick@4"}
	if !slices.Equal(s.events, want) {
		t.Errorf("events %v, want %v", s.events, want)
	}

	// A stream straight to a remote sink.
	remote := &sink{}
	rs := derived.EventSinkInterface.FromCapnp(connect(t, derived.EventSinkInterface.Capnp(remote)))
	defer mp.Release(rs)
	for i := range 100 {
		if err := rs.Event(ctx, "e", uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := mp.Flush(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if n, err := rs.Done(ctx); err != nil || n != 100 {
		t.Fatalf("Done = %d, %v", n, err)
	}
}

// TestGenericInterfaces calls instances of generic interfaces: a result
// of type Source(Text), an interface extending Source(Text), and a generic
// interface extending a generic one.
func TestGenericInterfaces(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	reg := registryProxy(t, newRegistry()).(*derived.RegistryClient)
	src, err := reg.Texts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := src.Peek(ctx); err != nil || v != "x" {
		t.Fatalf("Peek = %q, %v", v, err)
	}
	if r, err := src.Next(ctx); err != nil || r.Value != "x" || !r.More {
		t.Fatalf("Next = %+v, %v", r, err)
	}
	mp.Release(src)
	psrc := reg.TextsPipelined(ctx)
	if r, err := psrc.Next(ctx); err != nil || r.Value != "y" || r.More {
		t.Fatalf("pipelined Next = %+v, %v", r, err)
	}
	mp.Release(psrc)

	ts := derived.TextSourceInterface.FromCapnp(connect(t, derived.TextSourceInterface.Capnp(&textSource{source[string]{values: []string{"t"}}})))
	defer mp.Release(ts)
	if r, err := ts.Next(ctx); err != nil || r.Value != "t" {
		t.Fatalf("TextSource.Next = %+v, %v", r, err)
	}
	if err := ts.Rewind(ctx); err != nil {
		t.Fatal(err)
	}

	bi := derived.BufferedInterface[[]byte]()
	bp := bi.FromCapnp(connect(t, bi.Capnp(&buffered{})))
	defer mp.Release(bp)
	if err := bp.Fill(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if v, err := bp.Peek(ctx); err != nil || string(v) != "one" {
		t.Fatalf("Buffered.Peek = %q, %v", v, err)
	}
	if derived.BufferedInterface[[]byte]() != bi {
		t.Error("BufferedInterface[[]byte]() made two descriptions")
	}
}

type textSource struct{ source[string] }

func (*textSource) Rewind(context.Context) error { return nil }

// configurable implements Configurable.
type configurable struct{ got *derived.Options }

func (c *configurable) Configure(_ context.Context, o *derived.Options) (*derived.Options, error) {
	c.got = o
	return &derived.Options{Verbose: !o.Verbose, Limit: o.Limit + 1, Tags: append(slices.Clone(o.Tags), "b")}, nil
}

func (c *configurable) Capability(_ context.Context, cap *mp.Client) (*mp.Client, error) {
	return cap, nil // returning a borrowed capability is fine: the runtime takes its own reference
}

func (c *configurable) Convert(_ context.Context, v mp.AnyPointer) (mp.AnyPointer, error) {
	return mp.AnyText("converted " + v.Text()), nil
}

func (c *configurable) Sources(_ context.Context, of derived.Buffered[[]byte]) (derived.Configurable_Sources_Results, error) {
	return derived.Configurable_Sources_Results{Source: of, Text: &source[string]{values: []string{"s"}}}, nil
}

// TestNamedStructsAndAnyTypes calls methods whose parameters and results
// are named structs (with defaults), a Capability, a generic method's
// AnyPointer, and an instance of a generic interface.
func TestNamedStructsAndAnyTypes(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	c := &configurable{}
	p := derived.ConfigurableInterface.FromCapnp(connect(t, derived.ConfigurableInterface.Capnp(c))).(*derived.ConfigurableClient)
	defer mp.Release(p)

	// nil parameters are a struct never written: the server reads the
	// defaults.
	out, err := p.Configure(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.got == nil || !c.got.Verbose || c.got.Limit != 10 || !slices.Equal(c.got.Tags, []string{"a"}) {
		t.Errorf("the server got %+v, want the defaults", c.got)
	}
	if out.Verbose || out.Limit != 11 || !slices.Equal(out.Tags, []string{"a", "b"}) {
		t.Errorf("Configure = %+v", out)
	}
	if _, err := p.Configure(ctx, &derived.Options{Verbose: false, Limit: 0, Tags: []string{}}); err != nil {
		t.Fatal(err)
	}
	if c.got.Verbose || c.got.Limit != 0 || len(c.got.Tags) != 0 {
		t.Errorf("the server got %+v, want what was sent", c.got)
	}

	cap := mp.NewClient(base.NamedInterface.Capnp(&named{name: "cap"}))
	back, err := p.Capability(ctx, cap)
	if err != nil {
		t.Fatal(err)
	}
	nb := base.NamedInterface.FromCapnp(back.Capnp().AddRef())
	if name, err := nb.Name(ctx); err != nil || name != "cap" {
		t.Fatalf("Name through the returned capability = %q, %v", name, err)
	}
	mp.Release(nb)
	back.Close()
	pcap := p.CapabilityPipelined(ctx, cap)
	pn := base.NamedInterface.FromCapnp(pcap.Capnp().AddRef())
	if name, err := pn.Name(ctx); err != nil || name != "cap" {
		t.Fatalf("Name through the pipelined capability = %q, %v", name, err)
	}
	mp.Release(pn)
	pcap.Close()
	cap.Close()

	v, err := p.Convert(ctx, mp.AnyText("it"))
	if err != nil || v.Text() != "converted it" {
		t.Fatalf("Convert = %q, %v", v.Text(), err)
	}
	v.Release()

	b := &buffered{}
	b.values = [][]byte{[]byte("q")}
	res, err := p.Sources(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Source != derived.Buffered[[]byte](b) {
		t.Errorf("a local capability came back as %T", res.Source)
	}
	if r, err := res.Text.Next(ctx); err != nil || r.Value != "s" {
		t.Fatalf("Text.Next = %+v, %v", r, err)
	}
	mp.Release(res.Source)
	mp.Release(res.Text)
}

// TestUnimplemented: an implementation that embeds UnimplementedX
// answers the methods it lacks with ErrUnimplemented, across the
// connection.
func TestUnimplemented(t *testing.T) {
	mptest.CheckLeaks(t)
	ctx := testCtx(t)
	type partial struct{ derived.UnimplementedDiamond }
	d := derived.DiamondInterface.FromCapnp(connect(t, derived.DiamondInterface.Capnp(&partial{})))
	defer mp.Release(d)
	if _, err := d.Describe(ctx); !errors.Is(err, mp.ErrUnimplemented) {
		t.Errorf("Describe = %v, want ErrUnimplemented", err)
	}
	if _, err := d.Add(ctx, 1); !errors.Is(err, mp.ErrUnimplemented) {
		t.Errorf("Add = %v, want ErrUnimplemented", err)
	}
	if err := d.Rename(ctx, "x"); !errors.Is(err, mp.ErrUnimplemented) {
		t.Errorf("Rename = %v, want ErrUnimplemented", err)
	}
}

// TestInstanceMadeOnce: goroutines that describe an instance of a generic
// interface at once get one description, complete with its methods.
func TestInstanceMadeOnce(t *testing.T) {
	const n = 16
	got := make(chan *mp.Interface[derived.Buffered[string]], n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := derived.BufferedInterface[string]()
			x.Capnp(&textBuffer{}).Release() // serving needs the methods in
			got <- x
		}()
	}
	wg.Wait()
	close(got)
	first := <-got
	for x := range got {
		if x != first {
			t.Fatal("two descriptions of Buffered[string]")
		}
	}
}

type textBuffer struct {
	derived.UnimplementedBuffered[string]
}
