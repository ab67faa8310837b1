// peer: the C++ side of package interop's wire-compatibility tests, on the
// Cap'n Proto reference implementation (libcapnp-rpc). The Go test builds
// it in a temporary folder and runs it as a child process:
//
//   peer serve-fd FD                 serve Peer on the inherited socket FD
//   peer serve-unix PATH             listen on PATH, serve one connection
//   peer client-fd FD SCENARIO       run SCENARIO against the peer on FD
//   peer client-unix PATH SCENARIO   connect to PATH, run SCENARIO
//
// It reports on stdout, one line per fact, which the Go test checks:
// "ok ...", "FAIL ...", "exception TYPE: DESCRIPTION", "disconnected".
// A client exits 0 when every check of its scenario passed.

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/exception.h>
#include <kj/string.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "interop/internal/ischema/interop.capnp.h"
#include "schema/echo.capnp.h"
#include "ipc/control/lifetime.capnp.h"

namespace {


int failures = 0;

void say(kj::StringPtr line) {
  std::fwrite(line.begin(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void check(bool ok, kj::StringPtr what) {
  if (ok) {
    say(kj::str("ok ", what));
  } else {
    failures++;
    say(kj::str("FAIL ", what));
  }
}

kj::StringPtr typeName(kj::Exception::Type t) {
  switch (t) {
    case kj::Exception::Type::FAILED: return "FAILED";
    case kj::Exception::Type::OVERLOADED: return "OVERLOADED";
    case kj::Exception::Type::DISCONNECTED: return "DISCONNECTED";
    case kj::Exception::Type::UNIMPLEMENTED: return "UNIMPLEMENTED";
  }
  return "UNKNOWN";
}

void sayException(const kj::Exception& e) {
  // One line: newlines in a description would split the report.
  kj::String d = kj::str(e.getDescription());
  for (char& c : d) {
    if (c == '\n') c = ' ';
  }
  say(kj::str("exception ", typeName(e.getType()), ": ", d));
}

// Shared state of this process's servers, owned by main.
struct State {
  kj::Timer& timer;
  uint32_t live = 0;        // Counted objects not yet destroyed
  uint64_t received = 0;    // events the listener got
  uint64_t outOfOrder = 0;  // events whose sequence was not their position
  explicit State(kj::Timer& t) : timer(t) {}
};

class EchoImpl final : public Echo::Server {
  struct Guard {
    bool done = false;
    ~Guard() {
      if (!done) say("echoAfter canceled");
    }
  };

 public:
  explicit EchoImpl(State& s) : state(s) {}

  kj::Promise<void> echo(EchoContext ctx) override {
    ctx.getResults().setResult(ctx.getParams().getEcho());
    return kj::READY_NOW;
  }

  kj::Promise<void> echoAfter(EchoAfterContext ctx) override {
    uint32_t ms = ctx.getParams().getDelayMs();
    KJ_REQUIRE(ms <= 60000, "delay over a minute", ms);
    // Before capnp 1.0, a call ignores its caller's cancellation (Finish)
    // unless it allows it.
    ctx.allowCancellation();
    say(kj::str("echoAfter started ", ms));
    // The guard reports a call dropped before its end: the caller
    // canceled it, or the connection ended.
    auto guard = kj::heap<Guard>();
    Guard* g = guard.get();
    return state.timer.afterDelay(ms * kj::MILLISECONDS)
        .then([ctx, g]() mutable {
          g->done = true;
          ctx.getResults().setResult(ctx.getParams().getEcho());
        })
        .attach(kj::mv(guard));
  }

 private:
  State& state;
};

class CallbackImpl final : public Callback::Server {
 public:
  kj::Promise<void> call(CallContext ctx) override {
    auto params = ctx.getParams();
    uint32_t depth = params.getDepth();
    if (depth == 0) {
      ctx.getResults().setTrace("c++");
      return kj::READY_NOW;
    }
    auto req = params.getBack().callRequest();
    req.setDepth(depth - 1);
    req.setBack(thisCap());
    return req.send().then([ctx](capnp::Response<Callback::CallResults>&& r) mutable {
      ctx.getResults().setTrace(kj::str("c++ ", r.getTrace()));
    });
  }
};

class CountedImpl final : public Counted::Server {
 public:
  explicit CountedImpl(State& s) : state(s) { state.live++; }
  ~CountedImpl() noexcept(false) { state.live--; }
  kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }

 private:
  State& state;
};

class CallOrderImpl final : public CallOrder::Server {
 public:
  kj::Promise<void> getCallSequence(GetCallSequenceContext ctx) override {
    ctx.getResults().setN(count++);
    return kj::READY_NOW;
  }

 private:
  uint32_t count = 0;
};

class ListenerImpl final : public LifetimeListener::Server {
 public:
  explicit ListenerImpl(State& s) : state(s) {}
  kj::Promise<void> event(EventContext ctx) override {
    state.received++;
    if (ctx.getParams().getEvent().getSequence() != state.received) state.outOfOrder++;
    return kj::READY_NOW;
  }

 private:
  State& state;
};

kj::Promise<void> streamEvents(LifetimeListener::Client listener, uint32_t next, uint32_t count) {
  if (next > count) return kj::READY_NOW;
  auto req = listener.eventRequest();
  auto ev = req.initEvent();
  ev.setKind(::LifetimeEvent::Kind::STARTUP);
  ev.setExecutable("c++");
  ev.setSequence(next);
  return req.send().then([listener, next, count]() mutable {
    return streamEvents(kj::mv(listener), next + 1, count);
  });
}

class PeerImpl final : public Peer::Server {
 public:
  PeerImpl(State& s, LifetimeListener::Client l) : state(s), listener(kj::mv(l)) {}

  kj::Promise<void> makeEcho(MakeEchoContext ctx) override {
    ctx.getResults().setEcho(kj::heap<EchoImpl>(state));
    return kj::READY_NOW;
  }

  kj::Promise<void> makeCallback(MakeCallbackContext ctx) override {
    ctx.getResults().setCallback(kj::heap<CallbackImpl>());
    return kj::READY_NOW;
  }

  kj::Promise<void> fail(FailContext ctx) override {
    auto p = ctx.getParams();
    kj::Exception::Type t = kj::Exception::Type::FAILED;
    switch (p.getType()) {
      case ErrorType::FAILED: t = kj::Exception::Type::FAILED; break;
      case ErrorType::OVERLOADED: t = kj::Exception::Type::OVERLOADED; break;
      case ErrorType::DISCONNECTED: t = kj::Exception::Type::DISCONNECTED; break;
      case ErrorType::UNIMPLEMENTED: t = kj::Exception::Type::UNIMPLEMENTED; break;
    }
    return kj::Exception(t, __FILE__, __LINE__, kj::str(p.getReason()));
  }

  kj::Promise<void> makeCounted(MakeCountedContext ctx) override {
    ctx.getResults().setCounted(kj::heap<CountedImpl>(state));
    return kj::READY_NOW;
  }

  kj::Promise<void> liveCount(LiveCountContext ctx) override {
    ctx.getResults().setCount(state.live);
    return kj::READY_NOW;
  }

  kj::Promise<void> echoCap(EchoCapContext ctx) override {
    ctx.getResults().setCap(ctx.getParams().getCap());
    return kj::READY_NOW;
  }

  kj::Promise<void> echoCapLater(EchoCapLaterContext ctx) override {
    auto p = ctx.getParams();
    CallOrder::Client cap = p.getCap();
    kj::Promise<CallOrder::Client> later =
        state.timer.afterDelay(p.getDelayMs() * kj::MILLISECONDS).then([cap]() mutable {
          return kj::mv(cap);
        });
    ctx.getResults().setCap(CallOrder::Client(kj::mv(later)));
    return kj::READY_NOW;
  }

  kj::Promise<void> makeListener(MakeListenerContext ctx) override {
    ctx.getResults().setListener(listener);
    return kj::READY_NOW;
  }

  kj::Promise<void> received(ReceivedContext ctx) override {
    auto r = ctx.getResults();
    r.setCount(state.received);
    r.setOutOfOrder(state.outOfOrder);
    return kj::READY_NOW;
  }

  kj::Promise<void> streamTo(StreamToContext ctx) override {
    auto p = ctx.getParams();
    return streamEvents(p.getListener(), 1, p.getCount());
  }

 private:
  State& state;
  LifetimeListener::Client listener;
};

// ---- client scenarios ------------------------------------------------------

struct Client {
  Peer::Client peer;
  State& state;
  kj::WaitScope& ws;
};

void scenarioEcho(Client& c) {
  auto echo = c.peer.makeEchoRequest().send().wait(c.ws).getEcho();
  for (size_t n : {size_t(8), size_t(1) << 20}) {
    kj::String s = kj::heapString(n);
    for (size_t i = 0; i < n; i++) s[i] = 'a' + i % 26;
    auto req = echo.echoRequest();
    req.setEcho(s);
    auto r = req.send().wait(c.ws);
    check(r.getResult() == s, kj::str("echo ", n, " bytes"));
  }
}

void scenarioPipeline(Client& c) {
  auto req = c.peer.makeEchoRequest().send().getEcho().echoRequest();
  req.setEcho("pipelined");
  auto r = req.send().wait(c.ws);
  check(r.getResult() == "pipelined", kj::str("pipelined echo: ", r.getResult()));
}

void scenarioCallback(Client& c) {
  auto remote = c.peer.makeCallbackRequest().send().wait(c.ws).getCallback();
  auto req = remote.callRequest();
  req.setDepth(5);
  req.setBack(kj::heap<CallbackImpl>());
  auto r = req.send().wait(c.ws);
  // The remote side answers first: it is called at depth 5.
  check(r.getTrace() == "go c++ go c++ go c++", kj::str("callback trace: ", r.getTrace()));
}

void scenarioError(Client& c) {
  struct Case {
    ErrorType type;
    kj::Exception::Type want;
  } cases[] = {
      {ErrorType::FAILED, kj::Exception::Type::FAILED},
      {ErrorType::OVERLOADED, kj::Exception::Type::OVERLOADED},
      {ErrorType::DISCONNECTED, kj::Exception::Type::DISCONNECTED},
      {ErrorType::UNIMPLEMENTED, kj::Exception::Type::UNIMPLEMENTED},
  };
  for (auto& tc : cases) {
    auto req = c.peer.failRequest();
    req.setType(tc.type);
    kj::String reason = kj::str("boom-", typeName(tc.want));
    req.setReason(reason);
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { req.send().wait(c.ws); })) {
      sayException(*e);
      check(e->getType() == tc.want && strstr(e->getDescription().cStr(), reason.cStr()) != nullptr,
            kj::str("error ", typeName(tc.want)));
    } else {
      check(false, kj::str("error ", typeName(tc.want), ": call succeeded"));
    }
  }
}

uint32_t liveCount(Client& c) {
  return c.peer.liveCountRequest().send().wait(c.ws).getCount();
}

// waitFor polls cond every 10 ms for up to 10 s.
bool waitFor(Client& c, kj::Function<bool()> cond) {
  for (int i = 0; i < 1000; i++) {
    if (cond()) return true;
    c.state.timer.afterDelay(10 * kj::MILLISECONDS).wait(c.ws);
  }
  return cond();
}

void scenarioRelease(Client& c) {
  uint32_t before = liveCount(c);
  {
    auto counted = c.peer.makeCountedRequest().send().wait(c.ws).getCounted();
    counted.pingRequest().send().wait(c.ws);
    check(liveCount(c) == before + 1, kj::str("live while held: ", liveCount(c)));
  }
  bool gone = waitFor(c, [&]() { return liveCount(c) == before; });
  check(gone, kj::str("live after release: ", liveCount(c)));
}

kj::Promise<uint32_t> sequence(CallOrder::Client& cap, uint32_t expected) {
  auto req = cap.getCallSequenceRequest();
  req.setExpected(expected);
  return req.send().then([](capnp::Response<CallOrder::GetCallSequenceResults>&& r) {
    return r.getN();
  });
}

// embargo follows the C++ reference's own embargo test (rpc-test.c++):
// calls on the pipelined result of echoCap, before and after it resolves
// to our own capability, must arrive in the order they were made.
void scenarioEmbargo(Client& c, bool later) {
  CallOrder::Client cap = kj::heap<CallOrderImpl>();
  auto early = c.peer.liveCountRequest().send();
  kj::Promise<void> done = nullptr;
  CallOrder::Client pipeline = nullptr;
  if (later) {
    auto req = c.peer.echoCapLaterRequest();
    req.setCap(cap);
    req.setDelayMs(20);
    auto p = req.send();
    pipeline = p.getCap();
    done = p.ignoreResult();
  } else {
    auto req = c.peer.echoCapRequest();
    req.setCap(cap);
    auto p = req.send();
    pipeline = p.getCap();
    done = p.ignoreResult();
  }
  kj::Vector<kj::Promise<uint32_t>> calls;
  calls.add(sequence(pipeline, 0));
  calls.add(sequence(pipeline, 1));
  early.wait(c.ws);
  calls.add(sequence(pipeline, 2));
  done.wait(c.ws);
  calls.add(sequence(pipeline, 3));
  calls.add(sequence(pipeline, 4));
  if (later) {
    // Let the promise resolve before the last calls.
    c.state.timer.afterDelay(50 * kj::MILLISECONDS).wait(c.ws);
    calls.add(sequence(pipeline, 5));
    pipeline.whenResolved().wait(c.ws);
  }
  calls.add(sequence(pipeline, calls.size()));
  kj::String got = kj::str("");
  bool inOrder = true;
  for (uint32_t i = 0; i < calls.size(); i++) {
    uint32_t n = calls[i].wait(c.ws);
    got = kj::str(got, i == 0 ? "" : " ", n);
    if (n != i) inOrder = false;
  }
  check(inOrder, kj::str(later ? "embargo-later" : "embargo", " order: ", got));
}

void scenarioStream(Client& c) {
  // This side streams to the remote listener...
  auto remote = c.peer.makeListenerRequest().send().wait(c.ws).getListener();
  streamEvents(remote, 1, 1000).wait(c.ws);
  uint64_t count = 0, bad = 0;
  bool all = waitFor(c, [&]() {
    auto r = c.peer.receivedRequest().send().wait(c.ws);
    count = r.getCount();
    bad = r.getOutOfOrder();
    return count >= 1000;
  });
  check(all && count == 1000 && bad == 0, kj::str("stream out: received ", count, ", out of order ", bad));

  // ...and the remote side streams to ours.
  auto req = c.peer.streamToRequest();
  req.setListener(kj::heap<ListenerImpl>(c.state));
  req.setCount(1000);
  req.send().wait(c.ws);
  all = waitFor(c, [&]() { return c.state.received >= 1000; });
  check(all && c.state.received == 1000 && c.state.outOfOrder == 0,
        kj::str("stream in: received ", c.state.received, ", out of order ", c.state.outOfOrder));
}

void scenarioDisconnect(Client& c) {
  auto echo = c.peer.makeEchoRequest().send().wait(c.ws).getEcho();
  auto req = echo.echoAfterRequest();
  req.setEcho("never");
  req.setDelayMs(60000);
  say("calling echoAfter");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { req.send().wait(c.ws); })) {
    sayException(*e);
    check(e->getType() == kj::Exception::Type::DISCONNECTED, "disconnect");
  } else {
    check(false, "disconnect: call succeeded");
  }
}

// cancel starts a long call, waits for a byte on stdin (the Go test
// writes it once the call runs on its side), then drops the call, which
// cancels it, waits for another byte (written once the call has ended on
// the Go side, the connection still open) and checks that the connection
// still works.
void scenarioCancel(Client& c, kj::AsyncIoContext& io) {
  auto echo = c.peer.makeEchoRequest().send().wait(c.ws).getEcho();
  auto req = echo.echoAfterRequest();
  req.setEcho("never");
  req.setDelayMs(60000);
  auto pending = req.send();
  say("calling echoAfter");
  auto in = io.lowLevelProvider->wrapInputFd(0);
  char b;
  size_t n = in->tryRead(&b, 1, 1).wait(c.ws);
  check(n == 1, "told that the call runs");
  { auto dropped = kj::mv(pending); }
  say("dropped echoAfter");
  n = in->tryRead(&b, 1, 1).wait(c.ws);
  check(n == 1, "told that the call ended");
  auto req2 = echo.echoRequest();
  req2.setEcho("after");
  check(req2.send().wait(c.ws).getResult() == "after", "echo after cancel");
}

void runScenario(Client& c, kj::StringPtr scenario, kj::AsyncIoContext& io);

int runClient(kj::AsyncIoStream& stream, kj::StringPtr scenario, State& state, kj::AsyncIoContext& io) {
  kj::WaitScope& ws = io.waitScope;
  capnp::TwoPartyClient client(stream);
  Client c{client.bootstrap().castAs<Peer>(), state, ws};
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { runScenario(c, scenario, io); })) {
    sayException(*e);
    failures++;
    say(kj::str("FAIL ", scenario, ": unexpected exception"));
  }
  return failures == 0 ? 0 : 1;
}

void runScenario(Client& c, kj::StringPtr scenario, kj::AsyncIoContext& io) {
  if (scenario == "echo") {
    scenarioEcho(c);
  } else if (scenario == "pipeline") {
    scenarioPipeline(c);
  } else if (scenario == "callback") {
    scenarioCallback(c);
  } else if (scenario == "error") {
    scenarioError(c);
  } else if (scenario == "release") {
    scenarioRelease(c);
  } else if (scenario == "embargo") {
    scenarioEmbargo(c, false);
  } else if (scenario == "embargo-later") {
    scenarioEmbargo(c, true);
  } else if (scenario == "stream") {
    scenarioStream(c);
  } else if (scenario == "cancel") {
    scenarioCancel(c, io);
  } else if (scenario == "disconnect") {
    scenarioDisconnect(c);
  } else {
    failures++;
    say(kj::str("FAIL unknown scenario ", scenario));
  }
}

int runServer(kj::AsyncIoStream& stream, State& state, kj::WaitScope& ws) {
  capnp::TwoPartyVatNetwork network(stream, capnp::rpc::twoparty::Side::SERVER);
  auto rpc = capnp::makeRpcServer(
      network, Peer::Client(kj::heap<PeerImpl>(state, kj::heap<ListenerImpl>(state))));
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { network.onDisconnect().wait(ws); })) {
    sayException(*e);
  }
  say("disconnected");
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: peer serve-fd FD | serve-unix PATH | client-fd FD SCENARIO | "
               "client-unix PATH SCENARIO\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  kj::StringPtr mode = argv[1];
  bool client = mode.startsWith("client-");
  if (client && argc != 4) return usage();
  if (!client && argc != 3) return usage();

  auto io = kj::setupAsyncIo();
  State state(io.provider->getTimer());
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<kj::ConnectionReceiver> listener;
  if (mode.endsWith("-fd")) {
    int fd = std::atoi(argv[2]);
    stream = io.lowLevelProvider->wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  } else if (mode.endsWith("-unix")) {
    auto addr = io.provider->getNetwork().parseAddress(kj::str("unix:", argv[2])).wait(io.waitScope);
    if (client) {
      stream = addr->connect().wait(io.waitScope);
    } else {
      listener = addr->listen();
      say("listening");
      stream = listener->accept().wait(io.waitScope);
    }
  } else {
    return usage();
  }

  if (client) return runClient(*stream, argv[3], state, io);
  return runServer(*stream, state, io.waitScope);
}
