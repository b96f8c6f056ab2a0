// ngx.req.socket(raw?): OpenResty's downstream cosockets.
//
// ngx.req.socket() reads the request body as it arrives: receive,
// receiveuntil, receiveany, settimeout(s). The body kept so far moves into
// the socket's buffer and the rest is streamed to it (the connection's
// takeRequestBody, with its back-pressure); the body then counts as read.
//
// ngx.req.socket(true) takes the whole connection over once the response
// head is out (or to write one of its own): raw bytes both ways through
// the connection's tunnel (ContentSink::takeOver), a reader and a writer
// that may wait at the same time in two light threads. The connection
// closes when the request ends.
//
// The state lives in the request (RequestContext::downstream()), so a
// socket object kept past its request only ever raises "bad request".
// Waits follow ngx.sleep's shape; a wait destroyed before its event (the
// request ended, the thread was killed) unregisters and stops its timer.
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <new>
#include <string>

#include "lua/api/common.h"
#include "lua/api/socket_common.h"
#include "lua/api/socket_read.h"
#include "lua/phases/content.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

const char kBodyMeta[] = "tidegate.socket.req";
const char kRawMeta[] = "tidegate.socket.req.raw";

// Raw bytes waiting in the socket beyond this pause reading from the
// client until the script takes some (the same bound as a streamed body).
constexpr size_t kMaxBuffered = 64 * 1024;

// The Lua object: which request it belongs to and its timeouts.
struct ReqSocket {
  uint64_t task_id = 0;
  uint64_t send_ms = 60000, read_ms = 60000;
};

class IoWait;

// One request's downstream socket (the body reader, or the raw socket).
class Downstream : public RequestContext::Downstream, public http::ContentSink::TunnelPeer {
 public:
  explicit Downstream(RequestContext* ctx) : ctx_(ctx) {}
  ~Downstream() override {
    if (!kick_) return;
    uv_timer_stop(kick_);
    uv_close(reinterpret_cast<uv_handle_t*>(kick_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  RequestContext* ctx() const { return ctx_; }
  bool raw() const { return raw_; }
  // The body reader: the bytes the request body kept so far, and whether
  // that is all of it.
  void startBody(std::string kept, bool complete) {
    in_ = std::move(kept);
    eof_ = complete;
  }
  // The raw socket: the connection is ours from now on; `unread`: body
  // bytes nobody read, which come first.
  void startRaw(std::string unread) {
    raw_ = true;
    eof_ = false;
    in_ = std::move(unread);
    ctx_->sink().takeOver(this);  // may call onClientData at once
  }

  // A receive: pushes its results now and returns their count, or 0 with
  // nothing pushed when it must wait for more bytes.
  int take(lua_State* L, const ReadSpec& r);
  // A receive that ends now (timeout): nil, err, partial.
  int fail(lua_State* L, const ReadSpec& r, const char* err) { return pushReadFailure(L, in_, r, err); }
  IoWait*& reader() { return reader_; }
  IoWait*& sender() { return sender_; }

  // TunnelPeer: the client's bytes and its end (raw).
  void onClientData(const char* data, size_t len) override;
  // Pauses or resumes reading from the client (raw) for what waits here.
  void flow();
  void onClientEnd() override {
    eof_ = true;
    notify();
  }
  // More of the body, or its end (body reader). This comes from inside
  // the connection's parser, which must not see the request end under it:
  // the reader hears of it on the next loop turn.
  void bodyChanged() override {
    if (!kick_) {
      kick_ = new uv_timer_t;
      uv_timer_init(ctx_->loop(), kick_);
      kick_->data = this;
    }
    uv_timer_start(kick_, [](uv_timer_t* t) noexcept { static_cast<Downstream*>(t->data)->notify(); }, 0, 0);
  }

 private:
  void notify();
  // The body reader takes what arrived from the connection.
  void pullBody() {
    if (raw_ || eof_) return;
    std::string chunk;
    bool done = ctx_->sink().takeRequestBody(&chunk);
    in_.append(chunk);
    if (done) eof_ = true;
  }

  RequestContext* ctx_;
  bool raw_ = false;
  bool eof_ = false;     // no more bytes will come (the body's end, the client closed)
  bool paused_ = false;  // reading from the client paused (raw back-pressure)
  std::string in_;       // read, not yet returned
  IoWait* reader_ = nullptr;
  IoWait* sender_ = nullptr;
  uv_timer_t* kick_ = nullptr;  // bodyChanged()'s deferred wake
};

// One coroutine waiting in a receive or a send, with its timeout.
class IoWait : public Wait {
 public:
  IoWait(LuaTask* task, Co* co, Downstream* d, bool send, uint64_t ms, const ReadSpec& r)
      : task_(task), co_(co), d_(d), send_(send), read_(r) {
    slot() = this;
    timer_ = new uv_timer_t;
    uv_timer_init(task->loop(), timer_);
    timer_->data = this;
    uv_timer_start(timer_, onTimeout, ms, 0);
  }
  ~IoWait() override {
    if (slot() == this) slot() = nullptr;
    if (drain_) *drain_ = nullptr;  // a later drain finds no one (the sink is not called here)
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  // Bytes came (or the end): answers if the buffer now can.
  void readable() {
    if (int n = d_->take(co_->L, read_)) finish(n);
  }
  // A send's drain callback reaches it through `token` while it lives.
  void setDrainToken(std::shared_ptr<IoWait*> token) {
    drain_ = std::move(token);
    *drain_ = this;
  }
  // What was sent is all written to the client.
  void drained(size_t bytes) {
    lua_pushinteger(co_->L, static_cast<lua_Integer>(bytes));
    finish(1);
  }

 private:
  IoWait*& slot() { return send_ ? d_->sender() : d_->reader(); }
  // Destroys this (through wake).
  void finish(int nargs) {
    slot() = nullptr;
    task_->wake(co_, nargs);
  }
  // OpenResty: a timeout leaves the socket usable; a read returns what it
  // had (nil, "timeout", partial).
  static void onTimeout(uv_timer_t* t) noexcept {
    auto* self = static_cast<IoWait*>(t->data);
    lua_State* L = self->co_->L;
    if (!self->send_) {
      self->finish(self->d_->fail(L, self->read_, "timeout"));
      return;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    self->finish(2);
  }

  LuaTask* task_;
  Co* co_;
  Downstream* d_;
  bool send_;
  ReadSpec read_;
  uv_timer_t* timer_;
  std::shared_ptr<IoWait*> drain_;
};

// Stack of L: [] -> [results] (their count returned) or [] (0: wait).
int Downstream::take(lua_State* L, const ReadSpec& r) {
  int n = takeBuffered(L, in_, r);
  if (n == 0 && !raw_) {
    pullBody();
    n = takeBuffered(L, in_, r);
  }
  if (n == 0 && eof_) {
    if (r.mode == ReadMode::kAll) {
      lua_pushlstring(L, in_.data(), in_.size());
      in_.clear();
      n = 1;
    } else {
      n = pushReadFailure(L, in_, r, "closed");
    }
  }
  return n;
}

void Downstream::onClientData(const char* data, size_t len) {
  in_.append(data, len);
  notify();
  flow();
}

// Raw back-pressure: the client is paused while enough waits unread and no
// receive wants more (one that does, say receive(1 MiB), needs the bytes).
void Downstream::flow() {
  bool pause = raw_ && !reader_ && in_.size() >= kMaxBuffered;
  if (pause == paused_) return;
  paused_ = pause;
  ctx_->sink().pauseTunnel(pause);
}

void Downstream::notify() {
  if (reader_) reader_->readable();
}

// The request socket at index 1, for its own request only (OpenResty's
// "bad request" for one kept from an ended request). *s: the object.
Downstream* checkReqSocket(lua_State* L, ReqSocket** s) {
  *s = static_cast<ReqSocket*>(lua_touserdata(L, 1));
  bool ok = false;
  if (*s && lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, kBodyMeta);
    luaL_getmetatable(L, kRawMeta);
    ok = lua_rawequal(L, -1, -3) || lua_rawequal(L, -2, -3);
    lua_pop(L, 3);
  }
  if (!ok) luaL_typerror(L, 1, "request socket");
  LuaTask* task = requireTask(L);
  RequestContext* ctx = task->request();
  if (task->id() != (*s)->task_id || !ctx) luaL_error(L, "bad request");
  return static_cast<Downstream*>(ctx->downstream().get());
}

// Answers from the buffer, or waits for bytes. Stack: results.
int startReceive(lua_State* L, ReqSocket* s, Downstream* d, const ReadSpec& r) {
  LuaTask* task = requireYieldable(L);
  if (d->reader()) return pushSocketFailure(L, "socket busy reading");
  int got = d->take(L, r);
  if (got == 0) task->suspend(std::make_unique<IoWait>(task, task->running(), d, false, s->read_ms, r));
  d->flow();
  return got > 0 ? got : lua_yield(L, 0);
}

// sock:receive(pattern?) -> data | nil, err, partial
int reqReceive(lua_State* L) {
  ReqSocket* s = nullptr;
  Downstream* d = checkReqSocket(L, &s);
  ReadSpec r;
  if (int got = receiveArgs(L, &r)) return got;
  return startReceive(L, s, d, r);
}

// sock:receiveany(max) -> data | nil, err
int reqReceiveAny(lua_State* L) {
  ReqSocket* s = nullptr;
  Downstream* d = checkReqSocket(L, &s);
  ReadSpec r;
  receiveAnyArgs(L, &r);
  return startReceive(L, s, d, r);
}

// receiveuntil's iterator: iter(size?). Upvalues: the socket, its Until
// state, the pattern.
int reqUntilIterator(lua_State* L) {
  ReadSpec r = untilIteratorArgs(L);
  ReqSocket* s = nullptr;
  Downstream* d = checkReqSocket(L, &s);
  return startReceive(L, s, d, r);
}

// sock:receiveuntil(pattern, {inclusive = bool}?) -> iterator | nil, err
int reqReceiveUntil(lua_State* L) {
  ReqSocket* s = nullptr;
  checkReqSocket(L, &s);
  return pushUntilIterator(L, reqUntilIterator);
}

// sock:send(data) -> bytes | nil, err (raw only). Returns once the bytes
// are written to the client; a send and a receive may wait together.
int rawSend(lua_State* L) {
  ReqSocket* s = nullptr;
  Downstream* d = checkReqSocket(L, &s);
  LuaTask* task = requireYieldable(L);
  int t = lua_type(L, 2);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TTABLE) {
    return luaL_error(L, "bad argument #1 to 'send' (string, number, boolean, nil, ngx.null, or array table expected, got %s)",
                      lua_typename(L, t));
  }
  if (d->sender()) return pushSocketFailure(L, "socket busy writing");
  std::string out;
  appendValue(L, 2, &out, "send");
  size_t n = out.size();
  http::ContentSink& sink = d->ctx()->sink();
  if (n > 0) sink.tunnelWrite(out);
  // The callback may outlive the wait (a timeout, the request's end): it
  // holds a token, never the wait.
  auto token = std::make_shared<IoWait*>(nullptr);
  if (n == 0 || sink.waitDrain([token, n] {
        if (*token) (*token)->drained(n);
      })) {
    lua_pushinteger(L, static_cast<lua_Integer>(n));
    return 1;
  }
  auto wait = std::make_unique<IoWait>(task, task->running(), d, true, s->send_ms, ReadSpec{});
  wait->setDrainToken(std::move(token));
  task->suspend(std::move(wait));
  return lua_yield(L, 0);
}

// sock:settimeout(ms): send and read.
int reqSetTimeout(lua_State* L) {
  ReqSocket* s = nullptr;
  checkReqSocket(L, &s);
  s->send_ms = s->read_ms = checkTimeoutMs(L, 2, s->read_ms);
  return 0;
}

// sock:settimeouts(connect_ms, send_ms, read_ms); connect_ms is unused.
int reqSetTimeouts(lua_State* L) {
  ReqSocket* s = nullptr;
  checkReqSocket(L, &s);
  checkTimeoutMs(L, 2, 0);
  s->send_ms = checkTimeoutMs(L, 3, s->send_ms);
  s->read_ms = checkTimeoutMs(L, 4, s->read_ms);
  return 0;
}

// The body kept so far (in memory, or in its temp file) into *out.
bool keptBody(http::RequestBody& body, std::string* out) {
  if (!body.inFile()) {
    *out = body.data();
    return true;
  }
  if (!body.flush()) return false;
  int fd = ::open(body.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[16384];
  ssize_t got = 0;
  while ((got = ::read(fd, buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(got));
  ::close(fd);
  return got == 0;
}

// The body reader: nullptr, or why not (OpenResty's words).
const char* startBodyReader(RequestContext* ctx) {
  http::Request& req = ctx->mutableReq();
  if (ctx->downstream() || req.body.read()) return "request body already exists";
  if (req.body.discarded()) return "request body discarded";
  if (req.head->content_length <= 0) return "no body";
  std::string kept;
  if (!keptBody(req.body, &kept)) return "failed to read the request body";
  // The body is the socket's now: nothing more is kept, the rest streams.
  req.body.reset();
  req.body.markRead();
  if (!req.body_complete) req.body_streamed = true;
  auto d = std::make_unique<Downstream>(ctx);
  d->startBody(std::move(kept), req.body_complete);
  ctx->downstream() = std::move(d);
  return nullptr;
}

// The raw socket: nullptr, or why not. A body nobody read is the
// socket's first bytes, as in OpenResty; for a Content-Length body the
// bytes kept so far are the raw ones, and the rest arrives raw.
const char* startRawSocket(RequestContext* ctx) {
  auto* d = static_cast<Downstream*>(ctx->downstream().get());
  if (d && d->raw()) return "duplicate call";
  http::Request& req = ctx->mutableReq();
  // A chunked body is parsed as it comes: its framing cannot be handed
  // over raw. Nor can a body another reader is taking.
  if (!req.body_complete && (d || req.body.read() || req.head->chunked)) {
    return "pending request body reading in some other thread";
  }
  if (ctx->sink().pendingOutput() > 0 || !ctx->result().body.empty()) return "pending data to write";
  std::string unread;
  if (!d && !req.body.read() && !req.head->chunked) {
    if (!keptBody(req.body, &unread)) return "failed to read the request body";
    req.body.reset();
    req.body.markRead();
  }
  if (!d) {
    ctx->downstream() = std::make_unique<Downstream>(ctx);
    d = static_cast<Downstream*>(ctx->downstream().get());
  }
  d->startRaw(std::move(unread));
  return nullptr;
}

// ngx.req.socket(raw?) -> sock | nil, err
int reqSocket(lua_State* L) {
  int n = lua_gettop(L);
  if (n > 1) return luaL_error(L, "expecting zero arguments, but got %d", n);
  bool raw = n == 1 && lua_toboolean(L, 1);
  lua_settop(L, 0);
  RequestContext* ctx = requireRequest(L);
  if (!raw && ctx->req().head->chunked) return pushSocketFailure(L, "chunked request bodies not supported yet");
  requireRequestIn(L, {Phase::kRewrite, Phase::kAccess, Phase::kContent});
  const conf::HttpSettings& settings = ctx->req().settings();
  if (const char* err = raw ? startRawSocket(ctx) : startBodyReader(ctx)) return pushSocketFailure(L, err);
  auto* s = new (lua_newuserdata(L, sizeof(ReqSocket))) ReqSocket;
  s->task_id = ctx->id();
  s->send_ms = settings.lua_socket_send_timeout_ms.value_or(60000);
  s->read_ms = settings.lua_socket_read_timeout_ms.value_or(60000);
  luaL_getmetatable(L, raw ? kRawMeta : kBodyMeta);
  lua_setmetatable(L, -2);
  return 1;
}

}  // namespace

// Stack: [req] -> [req] with req.socket; registers the socket metatables.
void openNgxReqSocket(lua_State* L) {
  struct Method {
    const char* name;
    lua_CFunction fn;
    bool raw_only;  // the body reader cannot send
  };
  static const Method kMethods[] = {
      {"receive", reqReceive, false},         {"receiveany", reqReceiveAny, false},
      {"receiveuntil", reqReceiveUntil, false}, {"settimeout", reqSetTimeout, false},
      {"settimeouts", reqSetTimeouts, false},   {"send", rawSend, true},
  };
  for (bool raw : {false, true}) {
    luaL_newmetatable(L, raw ? kRawMeta : kBodyMeta);
    lua_createtable(L, 0, 6);
    for (const Method& m : kMethods) {
      if (raw || !m.raw_only) setFn(L, m.name, m.fn);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
  }
  setFn(L, "socket", reqSocket);
}

}  // namespace tidegate::lua
