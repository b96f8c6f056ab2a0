// The seam between a request and a content handler that may finish later
// (a Lua handler that yields). The http layer knows only these interfaces;
// src/lua/ implements them.
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "http/request.h"

namespace tidegate::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;
// A field by reference (name, value), for a head written out at once.
using HeaderView = std::pair<std::string_view, std::string_view>;
using HeaderViews = std::vector<HeaderView>;

// What a content handler produced. A status >= 300 with an empty body gets
// the built-in error page, as nginx's special responses do.
struct ContentResult {
  // No phase produced a response (every handler ended or called
  // ngx.exit(ngx.OK) and there was no content handler): the connection
  // answers with its default content (404).
  bool declined = false;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // as set, in order
  // When set, the headers instead of `headers`: views into the handler's
  // own strings, read only during the call this result is given to (the
  // proxy passes the upstream's head through without a copy).
  const HeaderViews* header_views = nullptr;
  std::string body;
  // The handler failed after the headers went out: the response cannot be
  // completed, so the connection is closed (the client sees it truncated).
  bool aborted = false;
  // No response: the request goes on in another location. kExec
  // (ngx.exec): an internal redirect to `redirect_uri` (a decoded path)
  // with `redirect_args` as $args, from the server's rewrite phase on.
  // kJump (ngx.req.set_uri(uri, true)): the request's $uri is already
  // changed; the location is searched again and its phases run (nginx's
  // `rewrite ... last`).
  enum class Redirect { kNone, kExec, kJump };
  Redirect redirect = Redirect::kNone;
  std::string redirect_uri;
  std::string redirect_args;
};

// Implemented by the connection. finish() is called exactly once, either
// from inside ContentHandler::start() or later from the loop.
class ContentTask;

class ContentSink {
 public:
  virtual ~ContentSink() = default;
  // Streams what `result` holds so far (ngx.flush, ngx.eof, a large
  // output): the status line and headers the first time, then its body,
  // which is cleared. `last`: the response body ends here. Without a
  // Content-Length from the handler, the body is sent chunked (or, to an
  // HTTP/1.0 client, delimited by closing the connection).
  // `task` is the caller (the filters run in its context).
  virtual void flushOutput(ContentResult& result, bool last, ContentTask* task) = 0;
  virtual bool headersSent() const = 0;
  // ngx.flush(true): true if every byte handed over so far is written to
  // the socket already; else false, and `cb` runs from the loop once it is.
  // One waiter at a time; cancelDrain() forgets it.
  virtual bool waitDrain(std::function<void()> cb) = 0;
  virtual void cancelDrain() = 0;
  // `task` is the caller, alive for the duration of the call (the log phase
  // runs in it, to share ngx.ctx).
  virtual void finish(ContentResult result, ContentTask* task) = 0;
  // The proxy's streaming, once flushOutput() sent the head: body bytes as
  // they come (through the body filter), `last` ending the body.
  virtual void streamBody(std::string_view data, bool last, ContentTask* task) = 0;
  // Bytes handed over for the client that the kernel has not taken yet
  // (the proxy pauses its upstream above a limit: back-pressure).
  virtual size_t pendingOutput() const = 0;
  // While held, flushOutput() and streamBody() queue their bytes without
  // writing; releasing writes what is queued: one write for a response
  // head and the body pieces read with it.
  virtual void holdOutput(bool hold) = 0;
  // proxy_request_buffering off: the request body as it arrives. Moves the
  // bytes read since the last call into *out (replacing its content);
  // true once the whole body was read and handed over. Reading from the
  // client pauses while too much waits here (back-pressure).
  virtual bool takeRequestBody(std::string* out) = 0;

  // A protocol switch (the proxy got 101 for an Upgrade request): the 101
  // head goes out with `headers` (plus Connection: upgrade), then the
  // connection carries raw bytes both ways until either side ends it
  // (finish() with `aborted` closes it). What the client sends goes to
  // `peer`, bytes already read behind the request first.
  class TunnelPeer {
   public:
    virtual ~TunnelPeer() = default;
    virtual void onClientData(const char* data, size_t len) = 0;
    virtual void onClientEnd() = 0;  // EOF or an error
  };
  virtual void startTunnel(const HeaderList& headers, TunnelPeer* peer) = 0;
  // ngx.req.socket(true): Lua takes the connection over, as startTunnel
  // does but without writing a head (the handler sent one, or writes its
  // own bytes). The response counts as sent; the connection closes when
  // the request ends. tunnelWrite() and pauseTunnel() serve it too.
  virtual void takeOver(TunnelPeer* peer) = 0;
  virtual void tunnelWrite(std::string_view data) = 0;
  // Back-pressure toward the client: no onClientData() while paused.
  virtual void pauseTunnel(bool paused) = 0;
};

// A running handler. Destroying it cancels whatever it waits for (timers,
// sockets) and guarantees the sink is never called again.
class ContentTask {
 public:
  virtual ~ContentTask() = default;
  // The client closed its side while the handler runs and the location
  // has lua_check_client_abort on: ngx.on_abort's handler runs, else the
  // request ends (status 499, nothing sent).
  virtual void clientAborted() {}
  // The request body, still arriving when the handler started, is complete
  // (ngx.req.read_body waiters resume).
  virtual void bodyComplete() {}
  // More of a streamed request body waits in the sink (takeRequestBody()).
  virtual void bodyAvailable() {}
};

// The proxy (src/proxy/): proxy_pass as a location's content phase.
class ProxyHandler {
 public:
  virtual ~ProxyHandler() = default;
  // Starts proxying `r`; its body may still be arriving (bodyComplete()
  // follows). `lua`: the request's Lua phases (their ngx.ctx serves the
  // filters, log_by_lua* and balancer_by_lua*), or null. `r`, `sink` and
  // `lua` outlive the task.
  virtual std::unique_ptr<ContentTask> start(Request& r, ContentSink& sink, ContentTask* lua) = 0;
  // The worker stops: idle upstream connections close, none is pooled again.
  virtual void shutdown() = 0;
  // `reap` frees the tasks the server retired (HttpServer::retire). The
  // handler calls it where its own I/O callbacks end, when no task is on
  // the stack: a task that ended there is freed while its memory is still
  // in cache, not at the end of the loop turn after every other callback.
  virtual void setReaper(std::function<void()> reap) = 0;
};

// The admin API (src/admin/): the content of the admin server's location
// (conf::Location::admin).
class AdminHandler {
 public:
  virtual ~AdminHandler() = default;
  // Answers `r`, whose body is complete and in memory, through
  // sink.finish() before returning.
  virtual void handle(Request& r, ContentSink& sink) = 0;
};

// The Lua code a request runs, phase by phase (null: none for that phase).
struct LuaPhases {
  const conf::LuaCode* rewrite = nullptr;
  const conf::LuaCode* access = nullptr;
  const conf::LuaCode* content = nullptr;
  bool any() const { return rewrite || access || content; }
};

// balancer_by_lua*: one run of an upstream's code, before a try picks its
// peer. The proxy fills the inputs; the code's ngx.balancer calls
// (lua/ngx/balancer.lua) fill the outputs, which apply to this try (the
// peer, keepalive, the rebuilt request) or to the rest of the request (more
// tries, retry_on, timeouts).
struct BalancerCall {
  // --- in ---
  uint64_t try_number = 1;  // 1 on the first try
  // The previous try's failure for get_last_failure(): "next" (a 403 or 404
  // that was retried) or "failed" (anything else), and its status; empty
  // on the first try.
  std::string last_state;
  int last_status = 0;
  // What set_more_tries() is capped to: the tries this request may make so
  // far (1 + the more tries granted by earlier runs) and
  // proxy_next_upstream_tries (0: no limit).
  uint64_t tries_allowed = 1;
  uint64_t max_tries = 0;

  // --- out ---
  // set_current_peer(): an IP address (IPv6 without brackets) and a port;
  // an empty host: none was set, the upstream's balancer picks.
  std::string peer_host;
  uint16_t peer_port = 0;
  // set_more_tries(count, retry_on): the last call's count (already capped),
  // and the statuses (conf::nextUpstreamForStatus() names them) retried
  // for this request as if proxy_next_upstream listed them.
  uint64_t more_tries = 0;
  std::vector<int> retry_on;
  // set_timeouts(), in ms: -1 keeps the current value.
  int64_t connect_timeout_ms = -1;
  int64_t send_timeout_ms = -1;
  int64_t read_timeout_ms = -1;
  // enable_keepalive(): the set peer's connection is pooled with these
  // (instead of the upstream's keepalive settings). 0 requests: no limit.
  bool keepalive = false;
  uint64_t keepalive_timeout_ms = 60000;
  uint64_t keepalive_requests = 100;
  // recreate_request(): the request head is built again (ngx.req.set_header
  // or ngx.var changes made since reach the upstream).
  bool recreate_request = false;
  // ngx.exit(status) in the code: >= 300 answers with that status, any
  // other value but 0 (ngx.OK) with 500, as OpenResty's balancer does.
  int exit_status = 0;
};

class ContentHandler {
 public:
  virtual ~ContentHandler() = default;
  // Runs the phases in order; `r` and `sink` outlive the returned task.
  // The handlers may change `r` (ngx.req.set_header, set_uri, the body...).
  virtual std::unique_ptr<ContentTask> start(Request& r, const LuaPhases& phases, ContentSink& sink) = 0;
  // A Lua context for a request whose response does not come from Lua
  // (return, error pages), so that its filters and log_by_lua* share one
  // ngx.ctx. It never calls the sink's finish().
  virtual std::unique_ptr<ContentTask> detached(Request& r, ContentSink& sink) = 0;
  // header_filter_by_lua*: runs `code` now, before the head is written; it
  // may change the status and the headers (Content-Type, Location and
  // Content-Length among them). False if it failed (logged): the response
  // cannot be sent.
  virtual bool runHeaderFilter(Request& r, const conf::LuaCode& code, ContentTask* task, int* status,
                               HeaderList* headers) = 0;
  // body_filter_by_lua*: runs `code` on one piece of the body (ngx.arg[1])
  // and the end-of-body flag (ngx.arg[2]); it may change both. False if it
  // failed (logged): the response is cut.
  virtual bool runBodyFilter(Request& r, const conf::LuaCode& code, ContentTask* task, std::string* chunk,
                             bool* eof) = 0;
  // log_by_lua*: runs `code` now, after the response was composed; it
  // cannot change the response. `task` (may be null) is the request's
  // earlier phases, whose ngx.ctx it sees. Null when it ended here; else
  // it waits (a cosocket, ngx.sleep) and the task returned goes on with a
  // copy of `r`: its owner keeps it until `ended(task)` is called, from
  // inside the task (so not to be freed there).
  virtual std::unique_ptr<ContentTask> runLog(Request& r, const conf::LuaCode& code, ContentTask* task,
                                              std::function<void(ContentTask*)> ended) = 0;
  // set_by_lua*: runs `code` to completion now (it cannot yield), with
  // `args` as ngx.arg[1..n]; its first return value (string or number,
  // else "") goes to *out. False after logging the error: the request is
  // answered with 500.
  virtual bool runSet(Request& r, const conf::LuaCode& code, const std::vector<std::string>& args,
                      std::string* out) = 0;
  // balancer_by_lua*: runs `code` for one try of a proxied request; `call`
  // holds what the code sees and what it set. `task` (may be null) is the
  // request's Lua context, whose ngx.ctx the code shares. Null when the
  // code ended now: *ok false after logging its error (with its
  // traceback): the request is answered with 500. Else it waits on a
  // cosocket: the caller keeps the task returned (freeing it cancels the
  // code) until `done(ok)` is called, from inside the task (which must not
  // be freed there); `call` must live as long.
  virtual std::unique_ptr<ContentTask> runBalancer(Request& r, const conf::LuaCode& code, ContentTask* task,
                                                   BalancerCall* call, bool* ok, std::function<void(bool)> done) = 0;
  // ssl_certificate_by_lua*: runs `code` for the handshake `ssl` of the
  // connection `conn`, before a certificate is chosen; it has no request
  // (ngx.var is not there, ngx.ctx is its own) and sets certificates on
  // `ssl` through ngx.ssl. Null when the code ended now: *ok false after
  // logging why (an error, ngx.exit(ngx.ERROR)): the handshake fails. Else
  // it waits (ngx.sleep, a cosocket): the caller keeps the task returned
  // (freeing it cancels the code) until `done(ok)` is called from inside
  // it (so not to be freed there); `ssl` and `conn` must live as long.
  // `budget_ms`: lua_budget_timeout (0: none).
  virtual std::unique_ptr<ContentTask> runSslCertificate(SSL* ssl, const ConnInfo& conn, const conf::LuaCode& code,
                                                         uint64_t budget_ms, bool* ok,
                                                         std::function<void(bool)> done) = 0;

  // A Lua balancer module (an upstream with "balancer": {"type": "lua",
  // "module": M}; docs/balancers.md). newLuaBalancer: require(M).new(servers)
  // with one table per peer {id = "ip:port", host, port, weight, tier,
  // backup}; a handle > 0, or 0 with *err. luaBalancerPick: obj:pick(),
  // which returns one of those tables or an id; false with *err.
  // luaBalancerFeedback: obj:feedback(server, ok, latency_ms) when the
  // object has it (errors are logged). All run to completion (no yield).
  struct LuaBalancerPeer {
    std::string id;
    std::string host;
    uint16_t port = 0;
    int weight = 1;
    int tier = 0;
  };
  virtual int newLuaBalancer(const std::string& module, const std::vector<LuaBalancerPeer>& peers,
                             std::string* err) = 0;
  virtual bool luaBalancerPick(int handle, std::string* id, std::string* err) = 0;
  virtual void luaBalancerFeedback(int handle, const std::string& id, bool ok, double latency_ms) = 0;
  virtual void freeLuaBalancer(int handle) = 0;
};

}  // namespace tidegate::http
