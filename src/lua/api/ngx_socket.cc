// ngx.socket.tcp / ngx.socket.connect: OpenResty's TCP cosockets (connect,
// send, receive, receiveuntil, receiveany, timeouts, close, a per-worker keepalive pool,
// setoption, sslhandshake). Each call that waits follows ngx.sleep's shape: check the
// arguments, check the phase, arm the event, suspend, yield; the event
// pushes the results and wakes the coroutine. A SockWait destroyed before
// its event (the request was aborted, the thread killed) closes the
// connection, whose memory is freed only in its close callbacks.
// A connection after sslhandshake carries its TLS state (socket_tls.h):
// reads are decrypted before they reach the buffer, sends encrypted, and
// the keepalive pool keeps it with the connection.
// UDP: ngx_socket_udp.cc; ngx.req.socket: ngx_req_socket.cc.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>

#include "core/lazy_timer.h"
#include "lua/api/common.h"
#include "lua/api/socket_common.h"
#include "lua/api/socket_read.h"
#include "lua/api/socket_tls.h"
#include "lua/phases/content.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

const char kTcpMeta[] = "tidegate.socket.tcp";

class SockWait;

// One connection: its stream, a timer (a waiting call's timeout, a queued
// connect's next try, or the idle timeout in the pool: see armTimer) and
// the bytes read but not yet returned. Freed only by closeConn(), once
// both handles are closed.
struct Conn {
  enum class Due : uint8_t { kNone, kWait, kNudge, kIdle };
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  core::LazyTimer timer;
  uv_connect_t connect_req;
  bool is_pipe = false;
  std::string out;             // send's data, being gathered
  std::string in;              // read (and decrypted), not yet returned
  std::unique_ptr<TlsClient> tls;  // after sslhandshake
  SockWait* waiter = nullptr;  // the call waiting on this connection
  std::string pool_key;        // while idle in the pool
  int reused = 0;
  bool reading = false;  // onRead is on: it stays on (startReading)
  bool pooled = false;   // idle in the pool
  bool counted = false;  // holds one of its pool's slots (a pool with a backlog)
  int read_end = 0;      // UV_EOF or an error that came while no call waited
  int open_handles = 2;
  bool closing = false;
  Due due = Due::kNone;  // what the timer does at its deadline
};

void onConnTimer(uv_timer_t* t) noexcept;

// Sets what the connection's timer does, `ms` from now. The timer is lazy
// (core::LazyTimer), so a keepalive connection's requests, each a wait with
// a read timeout and an idle period in the pool, cost about one timer
// change per timeout period instead of four per request.
void armTimer(Conn* c, Conn::Due due, uint64_t ms) {
  c->due = due;
  c->timer.set(ms, onConnTimer);
}

// Nothing is due any more; the timer may still fire, to no effect.
void disarmTimer(Conn* c) {
  c->due = Conn::Due::kNone;
  c->timer.clear();
}

Conn* newConn(uv_loop_t* loop, bool pipe) {
  auto* c = new Conn;
  c->is_pipe = pipe;
  if (pipe) uv_pipe_init(loop, &c->h.pipe, 0);
  else uv_tcp_init(loop, &c->h.tcp);
  uv_timer_init(loop, c->timer.handle());
  c->h.handle.data = c;
  c->timer.handle()->data = c;
  return c;
}

// Closes both handles; the Conn is deleted in the last close callback
// (a pending write or connect is called back first with UV_ECANCELED).
void releaseSlot(const std::string& key);

// A TLS connection says close_notify first, if the socket takes it now.
void closeConn(Conn* c) {
  if (c->closing) return;
  if (c->counted) {
    c->counted = false;
    releaseSlot(c->pool_key);
  }
  if (c->tls) {
    std::string alert = c->tls->shutdown();
    uv_buf_t buf = uv_buf_init(alert.data(), static_cast<unsigned>(alert.size()));
    if (!alert.empty()) uv_try_write(&c->h.stream, &buf, 1);
  }
  closeOwnedHandles(c, {&c->h.handle, reinterpret_cast<uv_handle_t*>(c->timer.handle())});
}

// libuv calls alloc then read synchronously, so one buffer serves every
// connection of the worker. 64 KiB: a few reads per typical response.
void onAlloc(uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
  static char storage[65536];
  *buf = uv_buf_init(storage, sizeof(storage));
}

// A write in flight. Each has its own request: TLS writes records that no
// send asked for (handshake flights, answers to post-handshake messages).
// `notify`: the connection's waiting send completes with it.
struct WriteReq {
  uv_write_t req;
  std::string bytes;
  bool notify;
};

void onWrite(uv_write_t* req, int status) noexcept;

// Writes `bytes` (not empty); 0 or a libuv error.
int writeBytes(Conn* c, std::string bytes, bool notify) {
  auto* w = new WriteReq{{}, std::move(bytes), notify};
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  int rc = uv_write(&w->req, &c->h.stream, &buf, 1, onWrite);
  if (rc != 0) delete w;
  return rc;
}

// send's bytes: what the socket takes now is written at once (as nginx's
// send() before it waits); the rest goes through uv_write. 1: all of it
// went out; 0: the rest is queued, a notifying WriteReq will say when it
// is out; else a libuv error.
int sendBytes(Conn* c, std::string bytes) {
  uv_buf_t buf = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
  int n = uv_try_write(&c->h.stream, &buf, 1);
  if (n == static_cast<int>(bytes.size())) return 1;
  if (n < 0 && n != UV_EAGAIN) return n;
  if (n > 0) bytes.erase(0, static_cast<size_t>(n));
  return writeBytes(c, std::move(bytes), true);
}

// Writes the ciphertext TLS produced, if any.
int flushTls(Conn* c, bool notify = false) {
  std::string out = c->tls->takeOutput();
  return out.empty() ? 0 : writeBytes(c, std::move(out), notify);
}

// Bytes read from the socket go to c->in, through TLS when the connection
// has it. 0, UV_EOF (the peer's close_notify) or UV_EPROTO (a TLS error).
int takeInput(Conn* c, const char* data, size_t len) {
  if (!c->tls) {
    c->in.append(data, len);
    return 0;
  }
  TlsClient::Input r = c->tls->feed(data, len, &c->in);
  if (flushTls(c) != 0) return UV_EPROTO;
  return r == TlsClient::Input::kOk ? 0 : r == TlsClient::Input::kClosed ? UV_EOF : UV_EPROTO;
}

// --- the per-worker keepalive pool, by pool name (one loop per worker) ---

// A pool name's connections. `size`: how many idle ones it keeps (set by
// connect's pool_size, else by each setkeepalive). With a backlog (connect's
// `backlog` option) it also limits the connections open for the name to
// `size`: `open` counts them (idle ones included) and connects beyond wait
// in `waiting`, at most `backlog` of them.
struct Pool {
  std::deque<Conn*> idle;
  size_t size = 0;
  bool limited = false;
  size_t backlog = 0;
  size_t open = 0;
  std::deque<SockWait*> waiting;
  bool unused() const { return idle.empty() && !limited && size == 0; }
};

std::unordered_map<std::string, Pool>& pools() {
  static std::unordered_map<std::string, Pool> p;
  return p;
}

// Forgets a pool name with nothing in it, unless few names are known: an
// entry costs two deques' allocations to make, and a pool with one idle
// connection would otherwise be made and dropped on every request.
void forgetIfUnused(std::unordered_map<std::string, Pool>::iterator it) {
  constexpr size_t kKeptNames = 64;
  if (it->second.unused() && pools().size() > kKeptNames) pools().erase(it);
}

void dropFromPool(Conn* c) {
  c->pooled = false;
  auto it = pools().find(c->pool_key);
  if (it == pools().end()) return;
  auto& q = it->second.idle;
  q.erase(std::remove(q.begin(), q.end(), c), q.end());
  forgetIfUnused(it);
}

// The first connect waiting for a connection of this pool, if any, tries
// again on the next loop turn (a slot or an idle connection is free).
void nudgeWaiting(Pool& p);

void releaseSlot(const std::string& key) {
  auto it = pools().find(key);
  if (it == pools().end()) return;
  it->second.open--;
  nudgeWaiting(it->second);
}

// An idle connection that the peer closed, or that received bytes nobody
// asked for, cannot be reused. TLS records that carry no data (a TLS 1.3
// session ticket) leave it reusable.
void idleRead(Conn* c, ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0 && c->tls && takeInput(c, buf->base, static_cast<size_t>(nread)) == 0 && c->in.empty()) return;
  dropFromPool(c);
  closeConn(c);
}

void setRef(Conn* c, bool ref) {
  for (auto* h : {&c->h.handle, reinterpret_cast<uv_handle_t*>(c->timer.handle())}) {
    if (ref) uv_ref(h);
    else uv_unref(h);
  }
}

// The most recently parked connection for `key`, or null.
Conn* takeFromPool(const std::string& key) {
  auto it = pools().find(key);
  if (it == pools().end() || it->second.idle.empty()) return nullptr;
  Conn* c = it->second.idle.back();
  it->second.idle.pop_back();
  forgetIfUnused(it);
  c->pooled = false;
  disarmTimer(c);
  setRef(c, true);
  c->reused++;
  return c;
}

// The Lua object (a userdata). `conn` is null when not connected.
//
// A socket is "live" from connect until close or setkeepalive: it is in its
// task's list (linkLive) and its metatable has a __gc (sockGc), so a
// connection is closed when its task ends or its socket is collected.
// Otherwise its metatable is the same but for __gc, and its strings hold no
// memory: most sockets (connect, use, setkeepalive) then need no finalizer,
// which LuaJIT would run at any allocation; one that runs while a trace is
// being recorded aborts it, and the aborted trace of a stitched C call is
// not tried again.
struct Socket {
  const char* meta = kTcpMeta;  // checkTaskSocket's mark
  Conn* conn = nullptr;
  uint64_t task_id = 0;  // the task that made it; no other may use it
  uint64_t connect_ms = 60000, send_ms = 60000, read_ms = 60000;
  bool busy = false;  // a call waits on it (another light thread's)
  bool live = false;
  // Its place in its task's list of live sockets (LuaTask::liveCosockets);
  // `list_task` is null when in none.
  LuaTask* list_task = nullptr;
  Socket* prev_live = nullptr;
  Socket* next_live = nullptr;
  std::string pool_key;
  std::string peer;  // host:port or the unix path when a pool name was given
  // host:port or the unix path, for the error log.
  const std::string& peerText() const { return peer.empty() ? pool_key : peer; }
};

// Every live socket is in its task's list: a task that ends closes the
// connections of its sockets (OpenResty's request cleanup); the socket
// objects stay, and any later use raises "bad request". A doubly linked
// list through the sockets themselves: linking and unlinking allocate
// nothing and look nothing up.
void linkLive(LuaTask* task, Socket* sock) {
  auto* head = static_cast<Socket*>(task->liveCosockets());
  sock->list_task = task;
  sock->prev_live = nullptr;
  sock->next_live = head;
  if (head) head->prev_live = sock;
  task->liveCosockets() = sock;
}

void forgetSocket(Socket* sock) {
  if (!sock->list_task) return;
  if (sock->prev_live) sock->prev_live->next_live = sock->next_live;
  else sock->list_task->liveCosockets() = sock->next_live;
  if (sock->next_live) sock->next_live->prev_live = sock->prev_live;
  sock->list_task = nullptr;
  sock->prev_live = sock->next_live = nullptr;
}

// The metatables of a socket (openNgxSocket): upvalues 1 and 2 of
// ngx.socket.tcp, ngx.socket.connect and the methods that change them.
constexpr int kLiveMeta = lua_upvalueindex(1);
constexpr int kIdleMeta = lua_upvalueindex(2);

// The socket at index 1, of the running `task`, becomes live (see Socket).
void makeLive(lua_State* L, LuaTask* task, Socket* sock) {
  if (sock->live) return;
  linkLive(task, sock);
  sock->live = true;
  lua_pushvalue(L, kLiveMeta);
  lua_setmetatable(L, 1);
}

// The socket at index 1, closed or parked, stops being live.
void makeIdle(lua_State* L, Socket* sock) {
  if (!sock->live || sock->conn || sock->busy) return;
  forgetSocket(sock);
  sock->live = false;
  std::string().swap(sock->pool_key);  // no finalizer will free them
  std::string().swap(sock->peer);
  lua_pushvalue(L, kIdleMeta);
  lua_setmetatable(L, 1);
}

// LuaTask's end hook. The task's waits are gone, so no socket is busy.
void closeTaskSockets(LuaTask& task) {
  auto* sock = static_cast<Socket*>(task.liveCosockets());
  while (sock) {
    Socket* next = sock->next_live;
    if (sock->conn) closeConn(sock->conn);
    sock->conn = nullptr;
    sock->list_task = nullptr;
    sock->prev_live = sock->next_live = nullptr;
    sock = next;
  }
  task.liveCosockets() = nullptr;
}


using Resolve = HostLookup<SockWait>;

// One coroutine waiting in connect, send or receive. The socket userdata
// stays on the coroutine's stack while it waits (yieldWithSocket), so the GC
// cannot free it meanwhile, and is there for connected() to return.
class SockWait : public Wait {
 public:
  enum class Kind { kConnect, kSend, kRead, kHandshake };
  SockWait(LuaTask* task, Co* co, Socket* sock, Kind kind) : task_(task), co_(co), sock_(sock), conn_(sock->conn), kind_(kind) {
    sock->busy = true;
    conn_->waiter = this;
    // The handshake uses the connect timeout, as lua-nginx-module does.
    uint64_t ms = kind == Kind::kConnect || kind == Kind::kHandshake ? sock->connect_ms
                  : kind == Kind::kSend                              ? sock->send_ms
                                                                     : sock->read_ms;
    armTimer(conn_, Conn::Due::kWait, ms);
  }
  // A wait cancelled before its event leaves the connection in an unknown
  // state: it is closed.
  ~SockWait() override {
    leaveQueue();
    if (nudged_) {
      // Cancelled before its turn came: the next connect waiting gets it.
      auto it = pools().find(pool_key_);
      if (it != pools().end()) nudgeWaiting(it->second);
    }
    if (resolve_) {
      resolve_->waiter = nullptr;
      uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
    }
    if (conn_) {
      conn_->waiter = nullptr;
      sock_->conn = nullptr;
      closeConn(conn_);
    }
    sock_->busy = false;
  }

  void setRead(const ReadSpec& r) { read_ = r; }
  void setResolve(Resolve* r) { resolve_ = r; }
  void setReturnSocket() { return_socket_ = true; }
  void setSent(size_t n) { sent_ = n; }
  // A connect waiting for a connection of a full pool (backlog): it
  // connects to host:port (or the unix path) once a slot is free.
  void queue(Pool& p, std::string key, std::string host, int port, bool unix_path) {
    p.waiting.push_back(this);
    queued_ = true;
    pool_key_ = std::move(key);
    host_ = std::move(host);
    port_ = port;
    unix_path_ = unix_path;
    deadline_ = uv_now(conn_->timer.handle()->loop) + sock_->connect_ms;
  }
  // nudgeWaiting() took it off the queue: it tries again from the loop.
  void nudge() {
    queued_ = false;
    nudged_ = true;
    armTimer(conn_, Conn::Due::kNudge, 0);
  }
  void setHandshake(std::string server_name, bool verify, bool want_session) {
    server_name_ = std::move(server_name);
    verify_ = verify;
    want_session_ = want_session;
  }

  void resolved(int status, const addrinfo* res);
  void connected(int status);
  void written(int status);
  void read(ssize_t nread, const uv_buf_t* buf);
  void timedOut();
  // A queued connect's turn (see nudge).
  void acquire();
  void handshakeStep(int status);
  // Whether this call consumes what the socket reads.
  bool reads() const { return kind_ == Kind::kRead || kind_ == Kind::kHandshake; }

 private:
  lua_State* co() const { return co_->L; }
  // The call is over: `nargs` results are on co's stack. `close` ends the
  // connection too. Destroys this (through wake).
  void finish(int nargs, bool close) {
    leaveQueue();
    Conn* c = conn_;
    conn_ = nullptr;
    c->waiter = nullptr;
    disarmTimer(c);
    if (close) {
      sock_->conn = nullptr;
      closeConn(c);
    }
    task_->wake(co_, nargs);
  }
  int fail(const char* err) { return pushSocketFailure(co(), err); }

  void leaveQueue() {
    if (!queued_) return;
    queued_ = false;
    auto it = pools().find(pool_key_);
    if (it == pools().end()) return;
    auto& q = it->second.waiting;
    q.erase(std::remove(q.begin(), q.end(), this), q.end());
  }

  LuaTask* task_;
  Co* co_;
  Socket* sock_;
  Conn* conn_;
  Kind kind_;
  Resolve* resolve_ = nullptr;
  ReadSpec read_;
  bool return_socket_ = false;
  size_t sent_ = 0;
  std::string server_name_;
  bool verify_ = false;
  bool want_session_ = true;
  // A connect queued on a full pool.
  bool queued_ = false;
  bool nudged_ = false;  // off the queue, its turn not taken yet
  std::string pool_key_, host_;
  int port_ = 0;
  bool unix_path_ = false;
  uint64_t deadline_ = 0;
};

void onConnTimer(uv_timer_t* t) noexcept {
  auto* c = static_cast<Conn*>(t->data);
  if (!c->timer.expired(onConnTimer)) return;  // nothing due (disarmTimer), or not yet
  Conn::Due due = c->due;
  c->due = Conn::Due::kNone;
  if (due == Conn::Due::kIdle) {
    dropFromPool(c);
    closeConn(c);
  } else if (c->waiter) {
    if (due == Conn::Due::kWait) c->waiter->timedOut();
    else c->waiter->acquire();
  }
}

void nudgeWaiting(Pool& p) {
  if (p.waiting.empty()) return;
  SockWait* w = p.waiting.front();
  p.waiting.pop_front();
  w->nudge();
}

void onConnect(uv_connect_t* req, int status) noexcept {
  auto* c = static_cast<Conn*>(req->handle->data);
  if (c->waiter) c->waiter->connected(status);
}

// A cancelled write (the connection closes) is called back before the
// close callbacks, so the Conn is still there.
void onWrite(uv_write_t* req, int status) noexcept {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* c = static_cast<Conn*>(req->handle->data);
  bool notify = w->notify;
  delete w;
  if (notify && c->waiter) c->waiter->written(status);
}

// Bytes that come while no call reads are kept for the next receive, up to
// kMaxUnread; then reading pauses until a receive wants more. An end (the
// peer closed, an error) is kept too and reported by that receive.
constexpr size_t kMaxUnread = 65536;

void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
  if (nread == 0) return;
  auto* c = static_cast<Conn*>(s->data);
  if (c->pooled) {
    idleRead(c, nread, buf);
    return;
  }
  if (c->waiter && c->waiter->reads()) {
    c->waiter->read(nread, buf);
    return;
  }
  int status = nread < 0 ? static_cast<int>(nread) : takeInput(c, buf->base, static_cast<size_t>(nread));
  if (status != 0) c->read_end = status;
  if (status != 0 || c->in.size() >= kMaxUnread) {
    uv_read_stop(s);
    c->reading = false;
  }
}

// Reading starts with the first receive (or handshake) and stays on, so a
// receive that waits costs no change of the poll set (as nginx's edge-
// triggered epoll). 0 or a libuv error.
int startReading(Conn* c) {
  if (c->reading) return 0;
  int rc = uv_read_start(&c->h.stream, onAlloc, onRead);
  if (rc == 0) c->reading = true;
  return rc;
}

// A receive that met the end of the input (`status`: UV_EOF, or an error)
// with what it needs not buffered: "*a" returns the rest, other patterns
// fail with the rest as the partial data. The connection is closed after
// either; an error is logged for `task`. Stack of L: [] -> the results.
int pushInputEnd(lua_State* L, LuaTask* task, Conn* c, const ReadSpec& r, int status) {
  if (status != UV_EOF) logSocketError(task, "recv() failed " + errnoText(status));
  if (status == UV_EOF && r.mode == ReadMode::kAll) {
    lua_pushlstring(L, c->in.data(), c->in.size());
    c->in.clear();
    return 1;
  }
  return pushReadFailure(L, c->in, r, status == UV_EOF ? "closed" : uv_strerror(status));
}

void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
  auto* r = reinterpret_cast<Resolve*>(req);
  if (r->waiter) r->waiter->resolved(status, res);
  uv_freeaddrinfo(res);
  delete r;
}

void SockWait::resolved(int status, const addrinfo* res) {
  Resolve* r = resolve_;
  resolve_ = nullptr;
  if (status != 0 || !res) {
    finish(fail(unresolvedMessage(r->host, status).c_str()), true);
    return;
  }
  sockaddr_storage addr = pickAddress(res, r->port);
  int rc = uv_tcp_connect(&conn_->connect_req, &conn_->h.tcp, reinterpret_cast<sockaddr*>(&addr), onConnect);
  if (rc != 0) finish(fail(uv_strerror(rc)), true);
}

void SockWait::connected(int status) {
  if (status != 0) {
    logSocketError(task_, "connect() failed " + errnoText(status) + " while connecting to " + sock_->peerText());
    finish(fail(uv_strerror(status)), true);
    return;
  }
  if (return_socket_) lua_pushvalue(co(), 1);  // left there by yieldWithSocket
  else lua_pushinteger(co(), 1);
  finish(1, false);
}

void SockWait::written(int status) {
  if (status != 0) {
    logSocketError(task_, "send() failed " + errnoText(status));
    finish(fail(uv_strerror(status)), true);
    return;
  }
  lua_pushinteger(co(), static_cast<lua_Integer>(sent_));
  finish(1, false);
}

void SockWait::read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  int status = nread < 0 ? static_cast<int>(nread) : takeInput(conn_, buf->base, static_cast<size_t>(nread));
  if (kind_ == Kind::kHandshake) {
    handshakeStep(status);
    return;
  }
  // A TLS close_notify may follow data in the same read: the data first.
  if (status == 0 || (status == UV_EOF && conn_->tls)) {
    int n = takeBuffered(co(), conn_->in, read_);
    if (n > 0) finish(n, false);
    if (n > 0 || status == 0) return;
  }
  finish(pushInputEnd(co(), task_, conn_, read_, status), true);
}

// OpenResty: a read timeout leaves the connection usable; a connect or
// send timeout closes it.
void SockWait::timedOut() {
  logSocketError(task_, kind_ == Kind::kRead        ? std::string("lua tcp socket read timed out")
                        : kind_ == Kind::kSend      ? std::string("lua tcp socket write timed out")
                        : kind_ == Kind::kHandshake ? "lua tcp socket SSL handshake timed out with " + sock_->peerText()
                                                    : "lua tcp socket connect timed out, when connecting to " + sock_->peerText());
  if (kind_ == Kind::kRead) {
    finish(pushReadFailure(co(), conn_->in, read_, "timeout"), false);
    return;
  }
  finish(fail("timeout"), true);
}

// Drives the handshake with what was read (`status`: takeInput's result
// or a read error) and ends the call once it is done or failed.
void SockWait::handshakeStep(int status) {
  Conn* c = conn_;
  TlsClient::Step step = status == 0 ? c->tls->handshake() : TlsClient::Step::kError;
  if (step != TlsClient::Step::kError && flushTls(c) != 0) step = TlsClient::Step::kError;
  if (step == TlsClient::Step::kWant) return;
  // Records that followed the handshake in the same read (a ticket, data).
  if (step == TlsClient::Step::kDone && takeInput(c, nullptr, 0) != UV_EPROTO) {
    bool ok = false;
    int n = pushHandshakeResult(co(), c->tls.get(), server_name_, verify_, want_session_, &ok);
    finish(n, !ok);
    return;
  }
  finish(fail("handshake failed"), true);
}

// --- Lua methods ---

// The socket at index 1, only for the task that made it (OpenResty's "bad
// request" for an object kept from an ended request).
Socket* checkSocket(lua_State* L) { return checkTaskSocket<Socket>(L, kTcpMeta); }

// Stack: [] -> [sock], not live yet. Only for C closures with the socket
// metatables as upvalues (a registry lookup by name would intern the name
// each time).
void pushNewSocket(lua_State* L, LuaTask* task) {
  auto* sock = new (lua_newuserdata(L, sizeof(Socket))) Socket;
  sock->task_id = task->id();
  const conf::HttpSettings& s = socketSettings(task);
  sock->connect_ms = s.lua_socket_connect_timeout_ms.value_or(60000);
  sock->send_ms = s.lua_socket_send_timeout_ms.value_or(60000);
  sock->read_ms = s.lua_socket_read_timeout_ms.value_or(60000);
  lua_pushvalue(L, kIdleMeta);
  lua_setmetatable(L, -2);
}

int socketTcp(lua_State* L) {
  pushNewSocket(L, requireCosocketTask(L));
  return 1;
}

// Starts connecting sock->conn (new) to the host; false with *rc results
// pushed on L when it failed at once.
int startConnect(SockWait* w, Conn* c, const char* host, int port, bool unix_path) {
  int err = 0;
  if (unix_path) {
    uv_pipe_connect(&c->connect_req, &c->h.pipe, host, onConnect);
    return 0;
  }
  sockaddr_storage addr{};
  if (uv_ip4_addr(host, port, reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
      uv_ip6_addr(host, port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0) {
    err = uv_tcp_connect(&c->connect_req, &c->h.tcp, reinterpret_cast<sockaddr*>(&addr), onConnect);
  } else {
    auto* r = new Resolve;
    r->host = host;
    r->port = port;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    err = uv_getaddrinfo(c->h.handle.loop, &r->req, onResolved, host, nullptr, &hints);
    if (err == 0) {
      r->waiter = w;
      w->setResolve(r);
    } else {
      delete r;
    }
  }
  return err;
}

// A queued connect's next try: an idle connection of its pool, a free
// slot to connect in, or back to the head of the queue until its
// deadline.
void SockWait::acquire() {
  nudged_ = false;
  Pool& p = pools()[pool_key_];
  if (Conn* idle = takeFromPool(pool_key_)) {
    Conn* mine = conn_;
    mine->waiter = nullptr;
    closeConn(mine);
    conn_ = idle;
    sock_->conn = idle;
    idle->waiter = this;
    connected(0);
    return;
  }
  uint64_t now = uv_now(conn_->timer.handle()->loop);
  if (p.open >= p.size) {
    p.waiting.push_front(this);
    queued_ = true;
    armTimer(conn_, Conn::Due::kWait, deadline_ > now ? deadline_ - now : 0);
    return;
  }
  p.open++;
  conn_->counted = true;
  conn_->pool_key = pool_key_;
  armTimer(conn_, Conn::Due::kWait, sock_->connect_ms);
  if (int err = startConnect(this, conn_, host_.c_str(), port_, unix_path_)) finish(fail(uv_strerror(err)), true);
}

// sock:connect(host, port [, opts]) / sock:connect("unix:/path" [, opts])
// -> 1 | nil, err; `return_socket`: the socket instead of 1 (ngx.socket.connect).
int doConnect(lua_State* L, bool return_socket) {
  Socket* sock = checkSocket(L);
  LuaTask* task = requireCosocketTask(L);
  const char* host = luaL_checkstring(L, 2);
  bool unix_path = std::strncmp(host, "unix:", 5) == 0;
  int port = 0, opts = 3;
  if (!unix_path) {
    lua_Integer p = luaL_checkinteger(L, 3);
    if (p < 0 || p > 65535) return luaL_error(L, "bad port number: %d", static_cast<int>(p));
    port = static_cast<int>(p);
    opts = 4;
  }
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  lua_Integer pool_size = 0, backlog = -1;
  lua_pushnil(L);  // the pool name
  if (!lua_isnoneornil(L, opts)) {
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_getfield(L, opts, "pool");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "bad \"pool\" option type: %s", luaL_typename(L, -1));
    lua_replace(L, -2);
    lua_getfield(L, opts, "pool_size");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER) return luaL_error(L, "bad \"pool_size\" option type: %s", luaL_typename(L, -1));
      pool_size = lua_tointeger(L, -1);
      if (pool_size <= 0) return luaL_error(L, "bad \"pool_size\" option value: %d", static_cast<int>(pool_size));
    }
    lua_pop(L, 1);
    lua_getfield(L, opts, "backlog");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER) return luaL_error(L, "bad \"backlog\" option type: %s", luaL_typename(L, -1));
      backlog = lua_tointeger(L, -1);
      if (backlog < 0) return luaL_error(L, "bad \"backlog\" option value: %d", static_cast<int>(backlog));
    }
    lua_pop(L, 1);
  }
  if (unix_path) host += 5;
  // host:port (or the path) is the pool key, unless a pool name was given.
  std::string& peer = lua_isstring(L, -1) ? sock->peer : sock->pool_key;
  peer.assign(host);
  if (!unix_path) {
    char num[8];
    auto end = std::to_chars(num, num + sizeof(num), port).ptr;
    peer.append(":").append(num, end);
  }
  if (lua_isstring(L, -1)) sock->pool_key = lua_tostring(L, -1);
  else sock->peer.clear();  // the pool key says it
  lua_pop(L, 1);
  if (sock->conn) {
    closeConn(sock->conn);
    sock->conn = nullptr;
  }
  makeLive(L, task, sock);
  if (Conn* c = takeFromPool(sock->pool_key)) {
    sock->conn = c;
    if (return_socket) lua_pushvalue(L, 1);
    else lua_pushinteger(L, 1);
    return 1;
  }
  Pool* pool = nullptr;
  if (pool_size > 0 || backlog >= 0) {
    pool = &pools()[sock->pool_key];
    if (pool->size == 0) {
      uint64_t dflt = socketSettings(task).lua_socket_pool_size.value_or(30);
      pool->size = pool_size > 0 ? static_cast<size_t>(pool_size) : static_cast<size_t>(dflt);
    }
    if (backlog >= 0) {
      pool->limited = true;
      pool->backlog = static_cast<size_t>(backlog);
    }
    if (!pool->limited) pool = nullptr;
  }
  if (pool && pool->open >= pool->size && pool->waiting.size() >= pool->backlog) {
    return pushSocketFailure(L, "too many waiting connect operations");
  }
  sock->conn = newConn(task->loop(), unix_path);
  auto wait = std::make_unique<SockWait>(task, task->running(), sock, SockWait::Kind::kConnect);
  if (return_socket) wait->setReturnSocket();
  if (pool && pool->open >= pool->size) {
    wait->queue(*pool, sock->pool_key, host, port, unix_path);
  } else {
    if (pool) {
      pool->open++;
      sock->conn->counted = true;
      sock->conn->pool_key = sock->pool_key;
    }
    if (int err = startConnect(wait.get(), sock->conn, host, port, unix_path)) {
      return pushSocketFailure(L, uv_strerror(err));  // ~SockWait closes the conn
    }
  }
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// ngx.socket.connect(host, port [, opts]) -> sock | nil, err
int socketConnect(lua_State* L) {
  pushNewSocket(L, requireCosocketTask(L));
  lua_insert(L, 1);
  return doConnect(L, true);
}

int sockConnect(lua_State* L) { return doConnect(L, false); }

// sock:send(data) -> bytes | nil, err. data: a string, a number or an
// array table of them (nested), concatenated as ngx.print does.
int sockSend(lua_State* L) {
  Socket* sock = checkSocket(L);
  LuaTask* task = requireCosocketTask(L);
  int t = lua_type(L, 2);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TTABLE) {
    return luaL_error(L, "bad argument #1 to 'send' (string, number, boolean, nil, ngx.null, or array table expected, got %s)",
                      lua_typename(L, t));
  }
  if (!sock->conn) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  Conn* c = sock->conn;
  c->out.clear();
  appendValue(L, 2, &c->out, "send");
  if (c->out.empty()) {
    lua_pushinteger(L, 0);
    return 1;
  }
  size_t sent = c->out.size();
  int rc = !c->tls                   ? sendBytes(c, std::move(c->out))
           : c->tls->encrypt(c->out) ? sendBytes(c, c->tls->takeOutput())
                                     : UV_EPROTO;
  c->out.clear();
  if (rc < 0) {
    sock->conn = nullptr;
    closeConn(c);
    return pushSocketFailure(L, uv_strerror(rc));
  }
  if (rc == 1) {
    lua_pushinteger(L, static_cast<lua_Integer>(sent));
    return 1;
  }
  auto wait = std::make_unique<SockWait>(task, task->running(), sock, SockWait::Kind::kSend);
  wait->setSent(sent);
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// Answers from the buffer, or waits for bytes. Stack: results.
int startReceive(lua_State* L, Socket* sock, const ReadSpec& r) {
  LuaTask* task = requireCosocketTask(L);
  if (!sock->conn) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  Conn* c = sock->conn;
  if (int got = takeBuffered(L, c->in, r)) return got;
  int rc = c->read_end ? c->read_end : startReading(c);
  if (rc != 0) {
    int n = pushInputEnd(L, task, c, r, rc);
    closeConn(c);
    sock->conn = nullptr;
    return n;
  }
  auto wait = std::make_unique<SockWait>(task, task->running(), sock, SockWait::Kind::kRead);
  wait->setRead(r);
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// sock:receive(pattern?) -> data | nil, err, partial. pattern: "*l"
// (default; the line without "\n" or "\r\n"), "*a" (until the peer
// closes), or a byte count.
int sockReceive(lua_State* L) {
  Socket* sock = checkSocket(L);
  ReadSpec r;
  if (int got = receiveArgs(L, &r)) return got;
  return startReceive(L, sock, r);
}

// sock:receiveany(max) -> data | nil, err: whatever arrives, at most max bytes.
int sockReceiveAny(lua_State* L) {
  Socket* sock = checkSocket(L);
  ReadSpec r;
  receiveAnyArgs(L, &r);
  return startReceive(L, sock, r);
}

// The iterator receiveuntil returns: iter(size?) -> data | nil | nil, err,
// partial. Upvalues: the socket, its Until state, the pattern.
int untilIterator(lua_State* L) {
  ReadSpec r = untilIteratorArgs(L);
  return startReceive(L, checkSocket(L), r);
}

// sock:receiveuntil(pattern, {inclusive = bool}?) -> iterator | nil, err
int sockReceiveUntil(lua_State* L) {
  checkSocket(L);
  return pushUntilIterator(L, untilIterator);
}

// sock:settimeout(ms): connect, send and read.
int sockSetTimeout(lua_State* L) {
  Socket* sock = checkSocket(L);
  uint64_t ms = checkTimeoutMs(L, 2, sock->read_ms);
  sock->connect_ms = sock->send_ms = sock->read_ms = ms;
  return 0;
}

// sock:settimeouts(connect_ms, send_ms, read_ms)
int sockSetTimeouts(lua_State* L) {
  Socket* sock = checkSocket(L);
  sock->connect_ms = checkTimeoutMs(L, 2, sock->connect_ms);
  sock->send_ms = checkTimeoutMs(L, 3, sock->send_ms);
  sock->read_ms = checkTimeoutMs(L, 4, sock->read_ms);
  return 0;
}

// sock:close() -> 1 | nil, err
int sockClose(lua_State* L) {
  Socket* sock = checkSocket(L);
  if (!sock->conn) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  closeConn(sock->conn);
  sock->conn = nullptr;
  makeIdle(L, sock);
  lua_pushinteger(L, 1);
  return 1;
}

// sock:setkeepalive(timeout_ms?, size?) -> 1 | nil, err. Parks the
// connection in the worker's pool for its pool name; the oldest idle one
// is closed when the pool is full. timeout 0: no idle timeout.
int sockSetKeepalive(lua_State* L) {
  Socket* sock = checkSocket(L);
  LuaTask* task = requireTask(L);
  const conf::HttpSettings& s = socketSettings(task);
  uint64_t timeout = checkTimeoutMs(L, 2, s.lua_socket_keepalive_timeout_ms.value_or(60000));
  lua_Integer size = luaL_optinteger(L, 3, static_cast<lua_Integer>(s.lua_socket_pool_size.value_or(30)));
  if (size <= 0) return luaL_error(L, "bad \"pool_size\" option value: %d", static_cast<int>(size));
  if (!sock->conn) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  Conn* c = sock->conn;
  if (!c->in.empty()) return pushSocketFailure(L, "unread data in buffer");
  if (c->read_end || startReading(c) != 0) {
    sock->conn = nullptr;
    closeConn(c);
    return pushSocketFailure(L, "closed");
  }
  Pool& pool = pools()[sock->pool_key];
  auto& q = pool.idle;
  size_t keep = pool.size > 0 ? pool.size : static_cast<size_t>(size);
  while (q.size() >= keep) {
    Conn* oldest = q.front();
    q.pop_front();
    oldest->pooled = false;
    closeConn(oldest);
  }
  c->pool_key = sock->pool_key;
  c->pooled = true;
  q.push_back(c);
  if (timeout > 0) armTimer(c, Conn::Due::kIdle, timeout);
  setRef(c, false);  // an idle connection does not keep the worker running
  sock->conn = nullptr;
  nudgeWaiting(pool);  // a connect waiting for this pool takes it
  makeIdle(L, sock);
  lua_pushinteger(L, 1);
  return 1;
}

// sock:getreusedtimes() -> count | nil, err
int sockGetReusedTimes(lua_State* L) {
  Socket* sock = checkSocket(L);
  if (!sock->conn) return pushSocketFailure(L, "closed");
  lua_pushinteger(L, sock->conn->reused);
  return 1;
}

// Starts the handshake on sock's connection and waits for it.
// Stack: [] -> results, or the yield.
int startHandshake(lua_State* L, LuaTask* task, Socket* sock, const char* name, const TlsSessionBox* resume,
                   bool verify, bool want_session) {
  Conn* c = sock->conn;
  std::string err;
  c->tls = TlsClient::create(cosocketTlsSettings(socketSettings(task)), name, resume, &err);
  if (!c->tls) return pushSocketFailure(L, err.c_str());
  if (c->tls->handshake() == TlsClient::Step::kError || flushTls(c) != 0 || startReading(c) != 0) {
    sock->conn = nullptr;
    closeConn(c);
    return pushSocketFailure(L, "handshake failed");
  }
  auto wait = std::make_unique<SockWait>(task, task->running(), sock, SockWait::Kind::kHandshake);
  wait->setHandshake(name, verify, want_session);
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// sock:sslhandshake(reused_session?, server_name?, ssl_verify?, send_status_req?)
// -> session | true | nil, err. server_name: SNI, and the name verified.
// A connection that did its handshake (one taken from the pool) does not
// redo it: the session passed comes back, or the connection's.
int sockSslHandshake(lua_State* L) {
  Socket* sock = checkSocket(L);
  LuaTask* task = requireYieldable(L);
  int top = lua_gettop(L);
  if (top > 5) {
    return luaL_error(L, "ngx.socket sslhandshake: expecting 1 ~ 5 arguments (including the object), but seen %d", top);
  }
  const TlsSessionBox* resume = toTlsSession(L, 2);
  bool want_session = !(lua_isboolean(L, 2) && !lua_toboolean(L, 2));
  const char* name = lua_toboolean(L, 3) ? luaL_checkstring(L, 3) : "";
  bool verify = lua_toboolean(L, 4);
  // lua-nginx-module's text when built without OCSP stapling.
  if (lua_toboolean(L, 5)) return pushSocketFailure(L, "no OCSP support");
  if (!sock->conn) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  Conn* c = sock->conn;
  if (c->tls && c->tls->handshaked()) {
    if (resume) {
      lua_settop(L, 2);
      return 1;
    }
    pushTlsSession(L, c->tls.get(), want_session);
    return 1;
  }
  return startHandshake(L, task, sock, name, resume, verify, want_session);
}

// sock:setoption(name, value) -> true | nil, err
int sockSetOption(lua_State* L) {
  Socket* sock = checkSocket(L);
  const char* name = luaL_checkstring(L, 2);
  if (!sock->conn) return pushSocketFailure(L, "closed");
  Conn* c = sock->conn;
  int rc = 0;
  int on = lua_toboolean(L, 3);
  if (std::strcmp(name, "keepalive") == 0) {
    if (!c->is_pipe) rc = uv_tcp_keepalive(&c->h.tcp, on, 60);
  } else if (std::strcmp(name, "tcp-nodelay") == 0) {
    if (!c->is_pipe) rc = uv_tcp_nodelay(&c->h.tcp, on);
  } else if (std::strcmp(name, "reuseaddr") == 0) {
    uv_os_fd_t fd;
    rc = uv_fileno(&c->h.handle, &fd);
    if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) rc = -errno;
  } else if (std::strcmp(name, "sndbuf") == 0 || std::strcmp(name, "rcvbuf") == 0) {
    int v = static_cast<int>(luaL_checkinteger(L, 3));
    rc = name[0] == 's' ? uv_send_buffer_size(&c->h.handle, &v) : uv_recv_buffer_size(&c->h.handle, &v);
  } else {
    lua_pushnil(L);
    lua_pushfstring(L, "unsupported option %s", name);
    return 2;
  }
  if (rc != 0) return pushSocketFailure(L, uv_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

// A socket the script dropped: its connection goes too. A waiting call
// anchors the socket, so none is pending here.
int sockGc(lua_State* L) {
  auto* sock = static_cast<Socket*>(lua_touserdata(L, 1));
  if (sock->conn) closeConn(sock->conn);
  forgetSocket(sock);
  sock->~Socket();
  return 0;
}

}  // namespace

void closeSocketPool() {
  auto all = std::move(pools());
  pools().clear();
  for (auto& [key, p] : all) {
    for (Conn* c : p.idle) {
      c->counted = false;
      closeConn(c);
    }
  }
}

// Stack: [ngx] -> [ngx] with ngx.socket = {tcp, connect, udp}.
void openNgxSocket(lua_State* L) {
  LuaTask::addEndHook(closeTaskSockets);
  // Stack: [ngx] -> [ngx, live, idle, methods]: the two metatables (see
  // Socket) share the methods.
  luaL_newmetatable(L, kTcpMeta);
  setFn(L, "__gc", sockGc);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 12);
  // Stack: [.., live, idle, t] -> same, with t[name] a closure of fn with
  // both metatables as upvalues (kLiveMeta, kIdleMeta).
  auto setClosure = [L](const char* name, lua_CFunction fn) {
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, fn, 2);
    lua_setfield(L, -2, name);
  };
  setClosure("connect", sockConnect);
  setFn(L, "send", sockSend);
  setFn(L, "receive", sockReceive);
  setFn(L, "receiveany", sockReceiveAny);
  setFn(L, "receiveuntil", sockReceiveUntil);
  setFn(L, "settimeout", sockSetTimeout);
  setFn(L, "settimeouts", sockSetTimeouts);
  setClosure("close", sockClose);
  setClosure("setkeepalive", sockSetKeepalive);
  setFn(L, "getreusedtimes", sockGetReusedTimes);
  setFn(L, "setoption", sockSetOption);
  setFn(L, "sslhandshake", sockSslHandshake);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "__index");
  lua_setfield(L, -2, "__index");
  // Stack: [ngx, live, idle]
  lua_createtable(L, 0, 3);
  setClosure("tcp", socketTcp);
  setClosure("connect", socketConnect);
  openNgxSocketUdp(L);
  lua_setfield(L, -4, "socket");
  lua_pop(L, 2);
}

}  // namespace tidegate::lua
