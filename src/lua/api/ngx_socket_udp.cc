// ngx.socket.udp: OpenResty's UDP and datagram unix-domain cosockets
// (setpeername, send, receive, settimeout, close). A send never waits: the
// datagram goes to the kernel at once (libuv queues it if the send buffer
// is full). receive, and setpeername with a host name, wait as ngx.sleep
// does: check the arguments and the phase, arm the event, suspend, yield;
// the event pushes the results and wakes the coroutine. A UdpWait destroyed
// before its event (the request was aborted, the thread killed) closes the
// endpoint, whose memory is freed only in its close callbacks.
// Not yet: udpsock:bind.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/lazy_timer.h"
#include "lua/api/socket_common.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

const char kUdpMeta[] = "tidegate.socket.udp";
// OpenResty's UDP_MAX_DATAGRAM_SIZE: the largest (and default) receive.
constexpr size_t kMaxDatagram = 65536;

class UdpWait;

// One connected datagram socket and the timer of the call waiting on it.
// Freed only by closeEndpoint(), once both handles are closed.
struct Endpoint {
  uv_udp_t udp;
  core::LazyTimer timer;  // the waiting call's timeout
  UdpWait* waiter = nullptr;
  int open_handles = 2;
  bool closing = false;
};

Endpoint* newEndpoint(uv_loop_t* loop) {
  auto* ep = new Endpoint;
  uv_udp_init(loop, &ep->udp);
  uv_timer_init(loop, ep->timer.handle());
  ep->udp.data = ep;
  ep->timer.handle()->data = ep;
  return ep;
}

// Closes both handles; the Endpoint is deleted in the last close callback
// (a queued send is called back first, with UV_ECANCELED).
void closeEndpoint(Endpoint* ep) {
  closeOwnedHandles(ep, {reinterpret_cast<uv_handle_t*>(&ep->udp), reinterpret_cast<uv_handle_t*>(ep->timer.handle())});
}

// libuv calls alloc then recv synchronously, so one buffer serves every
// UDP socket of the worker; 64 KiB holds the largest datagram.
void onAlloc(uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
  static char storage[kMaxDatagram];
  *buf = uv_buf_init(storage, sizeof(storage));
}

// The Lua object (a userdata). `ep` is null until setpeername succeeds
// and after close.
struct UdpSocket {
  const char* meta = kUdpMeta;  // checkTaskSocket's mark
  Endpoint* ep = nullptr;
  uint64_t task_id = 0;  // the task that made it; no other may use it
  uint64_t read_ms = 60000;
  bool busy = false;  // a call waits on it (another light thread's)
};

// Every live UDP socket by the id of its task: a task that ends closes its
// sockets' endpoints; the objects stay, and a later use raises "bad request".
std::unordered_map<uint64_t, std::unordered_set<UdpSocket*>>& socketsByTask() {
  static std::unordered_map<uint64_t, std::unordered_set<UdpSocket*>> m;
  return m;
}

void closeEndpointOf(UdpSocket* sock) {
  if (sock->ep) closeEndpoint(sock->ep);
  sock->ep = nullptr;
}

// LuaTask's end hook. The task's waits are gone, so no socket is busy.
void closeTaskUdpSockets(LuaTask& task) {
  auto it = socketsByTask().find(task.id());
  if (it == socketsByTask().end()) return;
  for (UdpSocket* sock : it->second) closeEndpointOf(sock);
  socketsByTask().erase(it);
}

using Lookup = HostLookup<UdpWait>;

// One coroutine waiting in receive or in setpeername's lookup. The socket
// userdata stays on the coroutine's stack meanwhile (yieldWithSocket), so
// the GC cannot free it; its timer is the socket's timeout.
class UdpWait : public Wait {
 public:
  UdpWait(LuaTask* task, Co* co, UdpSocket* sock) : task_(task), co_(co), sock_(sock), ep_(sock->ep) {
    sock->busy = true;
    ep_->waiter = this;
    ep_->timer.set(sock->read_ms, onTimeout);
  }
  // Cancelled before its event: the endpoint is closed (OpenResty's
  // cleanup of an aborted cosocket call).
  ~UdpWait() override {
    if (lookup_) cancelLookup();
    if (ep_) {
      ep_->waiter = nullptr;
      sock_->ep = nullptr;
      closeEndpoint(ep_);
    }
    sock_->busy = false;
  }

  void setReceive(size_t size) {
    receiving_ = true;
    size_ = size;
  }
  void setLookup(Lookup* lookup) { lookup_ = lookup; }

  void resolved(int status, const addrinfo* res);
  void received(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr);
  void timedOut();

 private:
  lua_State* co() const { return co_->L; }
  void cancelLookup() {
    lookup_->waiter = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&lookup_->req));
    lookup_ = nullptr;
  }
  // The call is over: `nresults` values are on co's stack. `close` ends
  // the endpoint too. Destroys this (through wake).
  void finish(int nresults, bool close) {
    Endpoint* ep = ep_;
    ep_ = nullptr;
    ep->waiter = nullptr;
    ep->timer.clear();
    if (receiving_) uv_udp_recv_stop(&ep->udp);
    if (close) closeEndpointOf(sock_);
    task_->wake(co_, nresults);
  }

  static void onTimeout(uv_timer_t* t) noexcept {
    auto* ep = static_cast<Endpoint*>(t->data);
    if (ep->timer.expired(onTimeout) && ep->waiter) ep->waiter->timedOut();
  }

  LuaTask* task_;
  Co* co_;
  UdpSocket* sock_;
  Endpoint* ep_;
  Lookup* lookup_ = nullptr;
  bool receiving_ = false;
  size_t size_ = kMaxDatagram;
};

void onRecv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr, unsigned) noexcept {
  auto* ep = static_cast<Endpoint*>(h->data);
  if (ep->waiter) ep->waiter->received(nread, buf, addr);
}

void onLookup(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
  auto* lookup = static_cast<Lookup*>(req->data);
  if (lookup->waiter) lookup->waiter->resolved(status, res);
  uv_freeaddrinfo(res);
  delete lookup;
}

void UdpWait::resolved(int status, const addrinfo* res) {
  Lookup* lookup = lookup_;
  lookup_ = nullptr;
  if (status != 0 || !res) {
    finish(pushSocketFailure(co(), unresolvedMessage(lookup->host, status).c_str()), true);
    return;
  }
  sockaddr_storage addr = pickAddress(res, lookup->port);
  int rc = uv_udp_connect(&ep_->udp, reinterpret_cast<sockaddr*>(&addr));
  if (rc != 0) {
    finish(pushSocketFailure(co(), uv_strerror(rc)), true);
    return;
  }
  lua_pushinteger(co(), 1);
  finish(1, false);
}

// One datagram answers one receive, cut to its size. An error (an ICMP
// "connection refused" from an earlier send) leaves the socket usable: a
// datagram socket has no connection state to lose.
void UdpWait::received(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr) {
  if (nread == 0 && !addr) return;  // nothing more to read now
  if (nread < 0) {
    finish(pushSocketFailure(co(), uv_strerror(static_cast<int>(nread))), false);
    return;
  }
  lua_pushlstring(co(), buf->base, std::min(static_cast<size_t>(nread), size_));
  finish(1, false);
}

// A receive timeout leaves the socket usable (OpenResty); a lookup that
// timed out leaves it without a peer.
void UdpWait::timedOut() {
  if (lookup_) {
    std::string msg = unresolvedMessage(lookup_->host, UV_ETIMEDOUT);
    cancelLookup();
    finish(pushSocketFailure(co(), msg.c_str()), true);
    return;
  }
  logSocketError(task_, "lua udp socket read timed out");
  finish(pushSocketFailure(co(), "timeout"), false);
}

// A datagram the kernel could not take at once (a full send buffer):
// libuv sends it when it can, and calls back also when the endpoint closes
// first (UV_ECANCELED). It owns its bytes until then.
struct QueuedSend {
  uv_udp_send_t req;
  std::string data;
};

int queueSend(Endpoint* ep, std::string data) {
  auto* q = new QueuedSend;
  q->data = std::move(data);
  q->req.data = q;
  uv_buf_t buf = uv_buf_init(q->data.data(), static_cast<unsigned>(q->data.size()));
  auto sent = [](uv_udp_send_t* req, int) noexcept { delete static_cast<QueuedSend*>(req->data); };
  int rc = uv_udp_send(&q->req, &ep->udp, &buf, 1, nullptr, sent);
  if (rc != 0) delete q;
  return rc;
}

// A datagram unix-domain socket connected to `path`. It is autobound first
// (Linux gives it an abstract name) so that the peer can answer, as
// OpenResty does.
int connectUnix(Endpoint* ep, const char* path) {
  sockaddr_un peer{};
  peer.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof(peer.sun_path)) return UV_ENAMETOOLONG;
  std::strcpy(peer.sun_path, path);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un self{};
  self.sun_family = AF_UNIX;
  int rc = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(sa_family_t)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)) != 0) {
    rc = -errno;
  } else {
    rc = uv_udp_open(&ep->udp, fd);
  }
  if (rc != 0) ::close(fd);
  return rc;
}

// --- Lua methods ---

UdpSocket* checkUdp(lua_State* L) { return checkTaskSocket<UdpSocket>(L, kUdpMeta); }

// ngx.socket.udp() -> sock. Stack: [] -> [sock]
int socketUdp(lua_State* L) {
  if (lua_gettop(L) != 0) return luaL_error(L, "expecting zero arguments, but got %d", lua_gettop(L));
  LuaTask* task = requireCosocketTask(L);
  auto* sock = new (lua_newuserdata(L, sizeof(UdpSocket))) UdpSocket;
  sock->task_id = task->id();
  sock->read_ms = socketSettings(task).lua_socket_read_timeout_ms.value_or(60000);
  socketsByTask()[sock->task_id].insert(sock);
  luaL_getmetatable(L, kUdpMeta);
  lua_setmetatable(L, -2);
  return 1;
}

// Waits for the lookup of `host`; the socket has its new endpoint, which
// is closed if the lookup cannot start. Stack: unchanged (the results come
// with the wake).
int startLookup(lua_State* L, LuaTask* task, UdpSocket* sock, const char* host, int port) {
  auto* lookup = new Lookup;
  lookup->req.data = lookup;
  lookup->host = host;
  lookup->port = port;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  int rc = uv_getaddrinfo(task->loop(), &lookup->req, onLookup, host, nullptr, &hints);
  if (rc != 0) {
    delete lookup;
    closeEndpointOf(sock);
    return pushSocketFailure(L, uv_strerror(rc));
  }
  auto wait = std::make_unique<UdpWait>(task, task->running(), sock);
  lookup->waiter = wait.get();
  wait->setLookup(lookup);
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// sock:setpeername(host, port) / sock:setpeername("unix:/path") -> 1 | nil, err.
// Any earlier peer's endpoint is closed first.
int udpSetPeerName(lua_State* L) {
  int n = lua_gettop(L);
  if (n != 2 && n != 3) {
    return luaL_error(L, "ngx.socket.udp setpeername: expecting 2 or 3 arguments (including the object), but seen %d", n);
  }
  UdpSocket* sock = checkUdp(L);
  LuaTask* task = requireCosocketTask(L);
  const char* host = luaL_checkstring(L, 2);
  bool unix_path = std::strncmp(host, "unix:", 5) == 0;
  int port = 0;
  if (!unix_path) {
    lua_Integer p = luaL_checkinteger(L, 3);
    if (p < 0 || p > 65535) return luaL_error(L, "bad port number: %d", static_cast<int>(p));
    port = static_cast<int>(p);
  }
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  closeEndpointOf(sock);
  sock->ep = newEndpoint(task->loop());
  sockaddr_storage addr{};
  int rc = 0;
  if (unix_path) {
    rc = connectUnix(sock->ep, host + 5);
  } else if (uv_ip4_addr(host, port, reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
             uv_ip6_addr(host, port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0) {
    rc = uv_udp_connect(&sock->ep->udp, reinterpret_cast<sockaddr*>(&addr));
  } else {
    return startLookup(L, task, sock, host, port);
  }
  if (rc != 0) {
    closeEndpointOf(sock);
    return pushSocketFailure(L, uv_strerror(rc));
  }
  lua_pushinteger(L, 1);
  return 1;
}

// sock:send(data) -> 1 | nil, err. data: a string, a number or an array
// table of them (nested), concatenated as ngx.print does: one datagram.
int udpSend(lua_State* L) {
  UdpSocket* sock = checkUdp(L);
  requireCosocketTask(L);
  int t = lua_type(L, 2);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TTABLE) {
    return luaL_error(L, "bad argument #1 to 'send' (string, number, boolean, nil, ngx.null, or array table expected, got %s)",
                      lua_typename(L, t));
  }
  if (!sock->ep) return pushSocketFailure(L, "closed");
  std::string data;
  appendValue(L, 2, &data, "send");
  uv_buf_t buf = uv_buf_init(data.data(), static_cast<unsigned>(data.size()));
  int rc = uv_udp_try_send(&sock->ep->udp, &buf, 1, nullptr);
  if (rc == UV_EAGAIN) rc = queueSend(sock->ep, std::move(data));
  if (rc < 0) return pushSocketFailure(L, uv_strerror(rc));
  lua_pushinteger(L, 1);
  return 1;
}

// sock:receive(size?) -> data | nil, err. One datagram, cut to `size`
// bytes (at most and by default 65536).
int udpReceive(lua_State* L) {
  int n = lua_gettop(L);
  if (n != 1 && n != 2) return luaL_error(L, "expecting 1 or 2 arguments (including the object), but got %d", n);
  UdpSocket* sock = checkUdp(L);
  LuaTask* task = requireCosocketTask(L);
  size_t size = kMaxDatagram;
  if (n == 2) {
    lua_Number v = luaL_checknumber(L, 2);
    if (v < 0) return luaL_argerror(L, 2, "bad size argument");
    if (v < static_cast<lua_Number>(kMaxDatagram)) size = static_cast<size_t>(v);
  }
  if (!sock->ep) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  int rc = uv_udp_recv_start(&sock->ep->udp, onAlloc, onRecv);
  if (rc != 0) return pushSocketFailure(L, uv_strerror(rc));
  auto wait = std::make_unique<UdpWait>(task, task->running(), sock);
  wait->setReceive(size);
  task->suspend(std::move(wait));
  return yieldWithSocket(L);
}

// sock:settimeout(ms): the timeout of receive (and of a host name lookup).
int udpSetTimeout(lua_State* L) {
  UdpSocket* sock = checkUdp(L);
  sock->read_ms = checkTimeoutMs(L, 2, sock->read_ms);
  return 0;
}

// sock:close() -> 1 | nil, err
int udpClose(lua_State* L) {
  UdpSocket* sock = checkUdp(L);
  if (!sock->ep) return pushSocketFailure(L, "closed");
  if (sock->busy) return pushSocketFailure(L, "socket busy");
  closeEndpointOf(sock);
  lua_pushinteger(L, 1);
  return 1;
}

// A socket the script dropped: its endpoint goes too. A waiting call
// anchors the socket, so none is pending here.
int udpGc(lua_State* L) {
  auto* sock = static_cast<UdpSocket*>(lua_touserdata(L, 1));
  closeEndpointOf(sock);
  auto it = socketsByTask().find(sock->task_id);
  if (it != socketsByTask().end()) {
    it->second.erase(sock);
    if (it->second.empty()) socketsByTask().erase(it);
  }
  sock->~UdpSocket();
  return 0;
}

}  // namespace

// Stack: [ngx, socket] -> [ngx, socket] with socket.udp.
void openNgxSocketUdp(lua_State* L) {
  LuaTask::addEndHook(closeTaskUdpSockets);
  luaL_newmetatable(L, kUdpMeta);
  lua_createtable(L, 0, 5);
  setFn(L, "setpeername", udpSetPeerName);
  setFn(L, "send", udpSend);
  setFn(L, "receive", udpReceive);
  setFn(L, "settimeout", udpSetTimeout);
  setFn(L, "close", udpClose);
  lua_setfield(L, -2, "__index");
  setFn(L, "__gc", udpGc);
  lua_pop(L, 1);
  setFn(L, "udp", socketUdp);
}

}  // namespace tidegate::lua
