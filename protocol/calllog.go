package protocol

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomultiprocess/multiprocess/internal/rpcconn"
)

// callLog times the calls on one connection from the Call message to its
// Return, in both directions, and logs each at Debug. Questions are
// numbered by the side that asks, so calls made and calls served are
// kept apart.
type callLog struct {
	log *slog.Logger

	mu     sync.Mutex
	made   map[uint32]pendingCall // by question ID
	served map[uint32]pendingCall // by answer ID
}

type pendingCall struct {
	iface  uint64
	method uint16
	start  time.Time
}

func newCallLog(log *slog.Logger) *callLog {
	return &callLog{
		log:    log,
		made:   make(map[uint32]pendingCall),
		served: make(map[uint32]pendingCall),
	}
}

// observe is the RPC connection's Options.Observe: it sees the messages
// received before they are handled and the messages sent just before
// they are written, so a call made is recorded before its Return can
// arrive.
func (l *callLog) observe(sent bool, m rpccp.Message) {
	switch m.Which() {
	case rpccp.Message_Which_call:
		if call, err := m.Call(); err == nil {
			if sent {
				l.start(&l.made, call)
			} else {
				l.start(&l.served, call)
			}
		}
	case rpccp.Message_Which_return:
		if ret, err := m.Return(); err == nil {
			if sent {
				l.finish(&l.served, "call served", ret)
			} else {
				l.finish(&l.made, "call made", ret)
			}
		}
	}
}

func (l *callLog) start(table *map[uint32]pendingCall, call rpccp.Call) {
	p := pendingCall{iface: call.InterfaceId(), method: call.MethodId(), start: time.Now()}
	l.mu.Lock()
	if *table != nil { // nil once endAll has run
		(*table)[call.QuestionId()] = p
	}
	l.mu.Unlock()
}

func (l *callLog) finish(table *map[uint32]pendingCall, msg string, ret rpccp.Return) {
	l.mu.Lock()
	p, ok := (*table)[ret.AnswerId()]
	delete(*table, ret.AnswerId())
	l.mu.Unlock()
	if !ok {
		return // a Bootstrap, which is not a call
	}
	var err error
	switch ret.Which() {
	case rpccp.Return_Which_exception:
		reason := "(unreadable)"
		if e, rerr := ret.Exception(); rerr == nil {
			reason, _ = e.Reason()
		}
		err = errors.New(reason)
	case rpccp.Return_Which_canceled:
		err = errors.New("canceled")
	}
	l.logCall(msg, p, err)
}

// endAll logs the calls made that never got their Return, failed with
// the connection's end.
func (l *callLog) endAll(err error) {
	l.mu.Lock()
	made := l.made
	l.made = nil
	l.mu.Unlock()
	for _, p := range made {
		l.logCall("call made", p, err)
	}
}

func (l *callLog) logCall(msg string, p pendingCall, err error) {
	args := []any{"method", methodName(p.iface, p.method), "duration", time.Since(p.start)}
	if err != nil {
		args = append(args, "err", err)
	}
	l.log.Debug(msg, args...)
}

// interfaceNames maps interface IDs to names for log lines; a message on
// the wire carries only IDs. Names come from the schemas registered with
// go-capnp's schemas.DefaultRegistry (package schema does so when
// imported) and from the methods
// that pass through NewServer and through a proxy from Connect. It only
// ever grows, and only with what the program's own schemas declare.
var interfaceNames sync.Map // uint64 -> *ifaceName

type ifaceName struct {
	mu       sync.Mutex
	name     string            // e.g. "Echo"; "" while unknown
	methods  map[uint16]string // by method ordinal
	searched bool              // the schema registry was consulted
}

// names returns the entry for an interface, creating an empty one the
// first time. The schema registry is read only when a name is missing
// (methodName), never on the way of NewServer or a call: decompressing
// a schema costs a spawned child a good part of a millisecond at start.
func names(iface uint64) *ifaceName {
	if v, ok := interfaceNames.Load(iface); ok {
		return v.(*ifaceName)
	}
	v, _ := interfaceNames.LoadOrStore(iface, &ifaceName{methods: make(map[uint16]string)})
	return v.(*ifaceName)
}

// learnName records the names in m, as generated code fills them in.
func learnName(m capnp.Method) {
	if m.InterfaceName == "" || m.MethodName == "" {
		return
	}
	n := names(m.InterfaceID)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.name == "" {
		n.name = trimFile(m.InterfaceName)
	}
	if _, ok := n.methods[m.MethodID]; !ok {
		n.methods[m.MethodID] = m.MethodName
	}
}

// methodName returns "Interface.method" for log lines, falling back to
// the numeric IDs for what this program has no name for.
func methodName(iface uint64, method uint16) string {
	n := names(iface)
	n.mu.Lock()
	if (n.name == "" || n.methods[method] == "") && !n.searched {
		n.searched = true
		found := lookupInterface(iface)
		if n.name == "" {
			n.name = found.name
		}
		for id, name := range found.methods {
			if _, ok := n.methods[id]; !ok {
				n.methods[id] = name
			}
		}
	}
	m := capnp.Method{InterfaceID: iface, MethodID: method, InterfaceName: n.name, MethodName: n.methods[method]}
	n.mu.Unlock()
	return m.String()
}

// displayMethod formats a method from generated code the same way.
func displayMethod(m capnp.Method) string {
	m.InterfaceName = trimFile(m.InterfaceName)
	return m.String()
}

// trimFile drops the schema file that generated code puts in front of an
// interface's name ("echo.capnp:Echo").
func trimFile(name string) string {
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func lookupInterface(id uint64) *ifaceName {
	n := &ifaceName{methods: make(map[uint16]string)}
	node, ok := rpcconn.FindInterface(id)
	if !ok {
		return n
	}
	if display, err := node.DisplayName(); err == nil && int(node.DisplayNamePrefixLength()) <= len(display) {
		n.name = display[node.DisplayNamePrefixLength():]
	}
	methods, err := node.Interface().Methods()
	if err != nil {
		return n
	}
	// Methods are listed in ordinal order.
	for j := 0; j < methods.Len(); j++ {
		if name, err := methods.At(j).Name(); err == nil && name != "" {
			n.methods[uint16(j)] = name
		}
	}
	return n
}
