package rpcconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// methodRecorder echoes Echo.echo's parameter for any method, prefixed
// with the method's ordinal and the name it was given, and counts calls.
type methodRecorder struct {
	name string
	mu   sync.Mutex
	n    int
}

func (h *methodRecorder) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return SendHeld(ctx, h, s)
}

func (h *methodRecorder) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	s, err := schema.Echo_echo_Params(r.Args).Echo()
	r.ReleaseArgs()
	if err == nil {
		var res capnp.Struct
		if res, err = r.Returner.AllocResults(capnp.ObjectSize{PointerCount: 1}); err == nil {
			err = schema.Echo_echo_Results(res).SetResult(fmt.Sprintf("%s@%d:%s", h.name, r.Method.MethodID, s))
		}
	}
	r.Returner.PrepareReturn(err)
	r.Returner.Return()
	r.Returner.ReleaseResults()
	return FailedCaller(errors.New("methodRecorder: no pipelining"))
}

func (h *methodRecorder) Brand() capnp.Brand { return capnp.Brand{} }
func (h *methodRecorder) Shutdown()          {}
func (h *methodRecorder) String() string     { return "methodRecorder" }

// callMethod calls method id of Echo on imp with a direct Call, with
// Echo.echo's parameters.
func callMethod(ctx context.Context, imp *Import, id uint16, s string) (string, error) {
	m := echoMethod
	m.MethodID = id
	dc, err := imp.NewCall(m, capnp.ObjectSize{PointerCount: 1}, false)
	if err != nil {
		return "", err
	}
	defer dc.Release()
	if err := schema.Echo_echo_Params(dc.Params()).SetEcho(s); err != nil {
		return "", err
	}
	if err := dc.Send(ctx); err != nil {
		return "", err
	}
	return schema.Echo_echo_Results(dc.Results()).Result()
}

// Calls of one shape to one export are read from the template of the
// one before (recvTemplate), each with its own question and parameters,
// and so are their Returns (retTemplateIn), each with its own results;
// a call that differs from it in its method or its target, or that
// carries a capability, is read through go-capnp and served as what it
// is.
func TestRecvCallTemplate(t *testing.T) {
	ctx := testCtx(t)
	h := &hookServer{fn: func(_ context.Context, s string) (string, error) {
		if s == "fail" {
			return "", errors.New("failed as asked")
		}
		return s, nil
	}}
	cl, srv, imp := rolePair(t, h, time.Minute)
	const n = 200
	for i := range n {
		if i == n/2 {
			// An exception between Returns with results: not read
			// from their template.
			if _, err := directEcho(ctx, imp, "fail"); err == nil || !strings.Contains(err.Error(), "failed as asked") {
				t.Fatalf("a failing call returned %v", err)
			}
		}
		// Parameters of several lengths: the template ends where the
		// parameters struct begins.
		want := fmt.Sprintf("%d-%s", i, string(make([]byte, i%17)))
		got, err := directEcho(ctx, imp, want)
		if err != nil || got != want {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	if got := srv.RoleStats().Templated; got < n {
		t.Errorf("%d of %d calls read from the template, want at least %d", got, n+1, n)
	}
	// Their Returns too, on the caller's side, but the exception and
	// the first after it.
	if got := cl.RoleStats().Templated; got < n-2 || got > n-1 {
		t.Errorf("%d of %d Returns read from the template, want %d or %d", got, n+1, n-2, n-1)
	}

	// Two methods, alternating: every call reaches the method it was
	// made to, none read from the other's template.
	rec := &methodRecorder{name: "r"}
	_, srv2, imp2 := recorderPair(t, rec)
	for i := range 40 {
		for _, m := range []uint16{0, 1, 1, 0} {
			s := fmt.Sprint(i)
			got, err := callMethod(ctx, imp2, m, s)
			if want := fmt.Sprintf("r@%d:%s", m, s); err != nil || got != want {
				t.Fatalf("round %d: %q, %v; want %q", i, got, err, want)
			}
		}
	}
	if rec.n != 160 {
		t.Errorf("calls served: %d, want 160", rec.n)
	}
	// Calls that follow one to the same method: the second of each
	// pair, and the first of each round but the first. (Their Returns
	// all look alike: the results are text of one size.)
	if got := srv2.RoleStats().Templated; got != 79 {
		t.Errorf("%d calls read from the template, want 79", got)
	}
}

func recorderPair(t *testing.T, h *methodRecorder) (cl, srv *Conn, imp *Import) {
	t.Helper()
	ctx := testCtx(t)
	cl, srv = connPair(t, nil, &Options{BootstrapClient: capnp.NewClient(h)})
	boot := cl.Bootstrap(ctx)
	t.Cleanup(boot.Release)
	if err := boot.Resolve(ctx); err != nil {
		t.Fatal(err)
	}
	if imp = ImportOf(boot); imp == nil {
		t.Fatal("the resolved bootstrap capability is not an import")
	}
	return cl, srv, imp
}

// A Call whose parameters are reached through a far pointer is no
// template: the landing pad lies past the bytes compared.
func TestRecvTemplateRefusesFarPointer(t *testing.T) {
	build := func(far bool) *capnp.Message {
		msg, root := newMessage()
		_, pay, params, err := buildCallMsg(root, 7, echoMethod, capnp.ObjectSize{PointerCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Echo_echo_Params(params).SetEcho("x"); err != nil {
			t.Fatal(err)
		}
		if far {
			seg := params.Segment()
			// A landing pad at the end: a struct pointer to params.
			pad, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8})
			if err != nil {
				t.Fatal(err)
			}
			padOff := structOff(pad)
			data := seg.Data()
			rel := (int64(structOff(params)) - int64(padOff) - 8) / 8
			sz := params.Size()
			binary.LittleEndian.PutUint64(data[padOff:], uint64(uint32(int32(rel)<<2))|uint64(sz.DataSize/8)<<32|uint64(sz.PointerCount)<<48)
			slot := structOff(capnp.Struct(pay)) + uint32(capnp.Struct(pay).Size().DataSize)
			binary.LittleEndian.PutUint64(data[slot:], 2|uint64(padOff/8)<<3)
		}
		return reframed(t, msg)
	}
	for _, far := range []bool{false, true} {
		msg := build(far)
		root, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseCall(root)
		if err != nil {
			t.Fatal(far, err)
		}
		if s, err := schema.Echo_echo_Params(h.content.Struct()).Echo(); err != nil || s != "x" {
			t.Fatalf("far %v: parameters %q, %v", far, s, err)
		}
		var tm recvTemplate
		tm.record(msg, root, &h)
		if tm.ok == far {
			t.Errorf("far pointer %v: template recorded %v", far, tm.ok)
		}
		if !far {
			var h2 callHead
			if !tm.match(msg, &h2) || h2.qid != h.qid || h2.importID != 7 || h2.method.InterfaceID != echoMethod.InterfaceID || h2.method.MethodID != 0 {
				t.Errorf("the message does not match its own template: %+v", h2)
			}
		}
	}
}

// Calls to one method of several exports, alternating, are read from
// the template of the one before, and each reaches its own export.
func TestRecvTemplateAcrossExports(t *testing.T) {
	ctx := testCtx(t)
	ts := newTestServer()
	cl, srv := connPair(t, nil, &Options{BootstrapClient: ts.client()})
	boot := cl.Bootstrap(ctx)
	defer boot.Release()
	var imps []*Import
	for range 3 {
		f, rel := schema.Init(boot).MakeEcho(ctx, nil)
		r, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		e := r.Result().AddRef()
		rel()
		defer e.Release()
		if err := capnp.Client(e).Resolve(ctx); err != nil {
			t.Fatal(err)
		}
		imp := ImportOf(capnp.Client(e))
		if imp == nil {
			t.Fatal("makeEcho's result is not an import")
		}
		imps = append(imps, imp)
	}
	if imps[0].id == imps[1].id || imps[1].id == imps[2].id {
		t.Fatalf("the exports share IDs: %d %d %d", imps[0].id, imps[1].id, imps[2].id)
	}
	before := srv.RoleStats().Templated
	const rounds = 50
	for i := range rounds {
		for j, imp := range imps {
			s := fmt.Sprint(i, "/", j)
			if got, err := directEcho(ctx, imp, s); err != nil || got != s {
				t.Fatalf("%s: %q, %v", s, got, err)
			}
		}
	}
	if got := srv.RoleStats().Templated - before; got < 3*rounds-1 {
		t.Errorf("%d of %d calls read from the template, want at least %d", got, 3*rounds, 3*rounds-1)
	}
}
