#include "http/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/clock.h"
#include "core/log.h"
#include "http/ascii.h"
#include "http/http_server.h"
#include "http/rewrite.h"
#include "http/router.h"
#include "http/status.h"
#include "http/uri.h"
#include "http/variables.h"
#include "tidegate/version.h"

namespace tidegate::http {
namespace {

using core::LogLevel;

// nginx's lingering_timeout: how long to drain a client after an error reply.
constexpr uint64_t kLingeringTimeoutMs = 5000;
// nginx's lingering_time: the most a lingering close may take in all.
constexpr uint64_t kLingeringTimeMs = 30000;
constexpr uint64_t kDrainLingeringMs = 200;
// Pipelined responses waiting for the socket beyond this pause parsing.
constexpr size_t kMaxPendingOutput = 64 * 1024;

void sockaddrToText(const sockaddr_storage& ss, std::string* addr, uint16_t* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    *port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    *port = ntohs(in6->sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    *addr = "unix:";  // as nginx's $remote_addr
    *port = 0;
    return;
  }
  *addr = buf;
}

std::string_view stripPort(std::string_view host) {
  if (!host.empty() && host[0] == '[') {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

}  // namespace

Connection::Connection(HttpServer* server, const conf::Config::ListenGroup* group)
    : server_(server), group_(group) {}

Connection::~Connection() {
  if (buf_) server_->giveBuffer(buf_, cap_);
}

void Connection::start(HttpServer* server, int fd, const conf::Config::ListenGroup* group) {
  auto* c = new Connection(server, group);
  uv_tcp_init(server->loop(), &c->tcp_);
  c->tcp_.data = c;
  c->open_handles_ = 1;
  if (uv_tcp_open(&c->tcp_, fd) != 0) {
    ::close(fd);
    c->closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp_), onClose);
    return;
  }
  uv_timer_init(server->loop(), &c->timer_);
  c->timer_.data = c;
  c->open_handles_ = 2;
  uv_tcp_nodelay(&c->tcp_, 1);
  server->link(c);
  c->info_.id = server->nextConnectionId();
  c->info_.loop = server->loop();
  sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    sockaddrToText(ss, &c->info_.remote_addr, &c->info_.remote_port);
  }
  len = sizeof(ss);
  if (uv_tcp_getsockname(&c->tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    sockaddrToText(ss, &c->info_.local_addr, &c->info_.local_port);
  }
  c->phase_ = Phase::kHead;  // the first request's head deadline runs from accept, as in nginx
  c->last_io_ms_ = uv_now(server->loop());
  c->startRequest();
  if (group->listen.ssl) {
    // The handshake counts against the first request's head deadline.
    c->tls_ = server->tlsContext(group) ? server->tlsContext(group)->newChannel(c) : nullptr;
    if (!c->tls_) {
      c->close();
      return;
    }
  }
  c->startReads();
  c->updateTimer();
}

void Connection::startRequest() {
  const conf::Server* def = group_->default_server.get();
  parser_.reset(def->limits, 0);
  parser_.setHandler(this);
  req_.reset();
  req_.conn = &info_;
  req_.server = def;
  req_.head = &parser_.head();
  uint64_t now = uv_now(server_->loop());
  req_.start_ms = now;
  head_end_ = 0;
  request_active_ = false;
  headers_sent_ = chunked_ = body_ended_ = client_eof_ = false;
  early_start_ = lua_early_ = false;
  body_stream_.clear();  // what a handler left unread of its streamed body (ngx.req.socket)
  body_allowed_ = true;
  drain_cb_ = nullptr;
  head_deadline_ms_ = now + *def->settings.client_header_timeout_ms;
}

// --- reading -------------------------------------------------------------------

bool Connection::reserve(size_t want) {
  if (!buf_) buf_ = server_->takeBuffer(&cap_);
  if (cap_ - end_ >= want) return true;
  // While a handler runs, its request's bytes must not move under it; more
  // input waits in the kernel until it is done (handleRead() pauses reading).
  if (phase_ == Phase::kProcessing) return cap_ > end_;
  if (start_ > 0) {  // parser offsets are relative to start_, so sliding the window keeps them valid
    memmove(buf_, buf_ + start_, end_ - start_);
    parsed_ -= start_;
    end_ -= start_;
    start_ = 0;
  }
  if (cap_ - end_ < want) {
    const conf::HeadLimits& lim = group_->default_server->limits;
    size_t max_cap = lim.total + 4096;
    if (cap_ >= max_cap && end_ == cap_) return false;
    size_t ncap = cap_;
    while (ncap - end_ < want && ncap < max_cap) ncap *= 2;
    if (ncap > max_cap) ncap = max_cap;
    char* nbuf = static_cast<char*>(realloc(buf_, ncap));
    if (!nbuf) return false;
    buf_ = nbuf;
    cap_ = ncap;
  }
  // The request's views are offsets from base: re-pointing base moves them all.
  if (req_.base) req_.base = buf_ + start_;
  return true;
}

void Connection::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<Connection*>(h->data);
  if (c->tls_) {
    // Ciphertext is fed to OpenSSL within the read callback: one buffer
    // serves every TLS connection of the worker.
    size_t cap = 0;
    char* scratch = c->server_->tlsScratch(&cap);
    *buf = uv_buf_init(scratch, static_cast<unsigned>(cap));
    return;
  }
  // Ask for room for a typical head; a full buffer grows up to the head limit.
  if (!c->reserve(512) && c->cap_ == c->end_) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  *buf = uv_buf_init(c->buf_ + c->end_, static_cast<unsigned>(c->cap_ - c->end_));
}

void Connection::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* c = static_cast<Connection*>(s->data);
  if (c->tls_) {
    c->handleTlsRead(nread, buf);
    return;
  }
  c->handleRead(nread);
}

void Connection::handleRead(ssize_t nread) {
  if (closing_) return;
  if (phase_ == Phase::kTunnel) {
    handleTunnelRead(nread);
    return;
  }
  // The last answer is out or on its way: input is read only to see the
  // client close, and dropped (end_ stays put, so nothing accumulates).
  bool discarding = phase_ == Phase::kLingering || close_after_write_;
  if (discarding && nread >= 0) {
    if (nread > 0) last_io_ms_ = uv_now(server_->loop());
    return;
  }
  if (nread == UV_ENOBUFS && discarding) return;
  if (nread == UV_ENOBUFS) {
    if (phase_ == Phase::kProcessing) {
      // The buffer holds a running handler's request: stop reading until it
      // is done (finish() resumes).
      pauseReading();
      return;
    }
    respondError(431, "client sent too large request head");
    return;
  }
  if (nread == UV_EOF && phase_ == Phase::kProcessing && task_) {
    // The client half-closed while a handler runs. As in nginx with
    // lua_check_client_abort off, the handler goes on and the response is
    // still sent (a half-closed client can read it); with it on, the
    // handler hears of it.
    pauseReading();
    keepalive_ = false;
    if (client_eof_) return;
    client_eof_ = true;
    // The proxy hears of it unless proxy_ignore_client_abort (nginx: 499).
    if (proxying_ || *settings().lua_check_client_abort) task_->clientAborted();  // may finish the request
    return;
  }
  if (nread < 0) {
    if (phase_ == Phase::kHead && end_ > start_) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "client prematurely closed connection while reading client request headers%s",
                  describe().c_str());
    } else if (phase_ == Phase::kBody) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "client prematurely closed connection while reading client request body%s",
                  describe().c_str());
    }
    close();
    return;
  }
  if (nread == 0) return;
  last_io_ms_ = uv_now(server_->loop());
  end_ += static_cast<size_t>(nread);
  if (phase_ == Phase::kIdle) {
    phase_ = Phase::kHead;
    head_deadline_ms_ = uv_now(server_->loop()) + *group_->default_server->settings.client_header_timeout_ms;
  }
  if (!request_active_) beginRequest();
  processInput();
}

void Connection::processInput() {
  if (in_process_) return;  // re-entered from a callback: the outer loop continues
  in_process_ = true;
  while (!closing_ && !close_after_write_ && phase_ != Phase::kLingering && phase_ != Phase::kProcessing) {
    if (out_.size() + writing_.size() > kMaxPendingOutput) {
      // Hand what we have to the socket; if it does not all fit, wait for
      // the client to read (afterWrite() resumes this loop).
      flush();
      if (closing_) break;
      if (write_pending_) {
        // Back-pressure: read no more pipelined requests until the client
        // has taken these answers (afterWrite() resumes).
        pauseReading();
        break;
      }
    }
    if (parsed_ == end_ && phase_ != Phase::kBody) break;
    size_t consumed = 0;
    auto ev = parser_.execute(buf_ + start_, parsed_ - start_, end_ - start_, &consumed);
    parsed_ += consumed;
    if (early_start_ && ev == RequestParser::Event::kNeedMore) {
      // The head is read and the body is on its way: the rewrite phase and
      // the Lua phases start now, as in nginx; the body keeps arriving.
      early_start_ = false;
      lua_early_ = true;
      runPhases(true);
      if (closing_ || close_after_write_) break;
      continue;  // body bytes may already be buffered behind the head
    }
    if (ev == RequestParser::Event::kNeedMore) break;
    if (ev == RequestParser::Event::kError) {
      respondError(parser_.errorStatus(), parser_.errorText());
      break;
    }
    onMessage();
  }
  // Body bytes already parsed are not needed: drop them, keep the head.
  if (phase_ == Phase::kBody && parsed_ == end_) parsed_ = end_ = start_ + head_end_;
  in_process_ = false;
  flush();
  updateTimer();
  releaseBufferIfIdle();
}

int Connection::onHeadComplete(std::string* why) {
  const RequestHead& h = parser_.head();
  head_end_ = h.head_len;
  req_.base = buf_ + start_;
  req_.request_length = h.head_len;
  TargetParts t = splitTarget(h.target.in(req_.base));
  std::string_view host = t.authority;
  if (host.empty() && h.host_index >= 0) host = h.headers[static_cast<size_t>(h.host_index)].value.in(req_.base);
  std::string_view bare = stripPort(host);
  req_.host.assign(bare);
  for (char& ch : req_.host) ch = asciiLower(ch);
  if (!req_.host.empty() && req_.host.back() == '.') req_.host.pop_back();
  req_.server = findServer(*group_, req_.host);
  conn_settings_ = &req_.settings();
  if (t.has_args) {
    req_.args = Slice{static_cast<uint32_t>(t.args.data() - req_.base), static_cast<uint32_t>(t.args.size())};
  }
  req_.has_args = t.has_args;
  if (!normalizePath(t.path, &req_.uri)) {
    *why = "client sent invalid request target";
    return 400;
  }
  req_.location = findLocation(*req_.server, req_.uri);
  conn_settings_ = &req_.settings();
  uint64_t max_body = *settings().client_max_body_size;
  if (max_body && h.content_length > 0 && static_cast<uint64_t>(h.content_length) > max_body) {
    *why = "client intended to send too large body: " + std::to_string(h.content_length) + " bytes";
    return 413;
  }
  parser_.setMaxBody(max_body);
  prepareBody();
  if (h.hasBody()) {
    phase_ = Phase::kBody;
    body_start_ms_ = uv_now(server_->loop());
    // A location with Lua request phases starts them before the body is
    // read (unless lua_need_request_body wants it first), as nginx does.
    const conf::HttpSettings& s = settings();
    bool lua = server_->contentHandler() && (s.rewrite_lua || s.access_lua ||
                                             (req_.location && !req_.location->content_lua.empty()));
    if (lua && !*s.lua_need_request_body) {
      early_start_ = true;
      req_.body_complete = false;
    } else if (streamsBody()) {
      // proxy_request_buffering off: the proxy starts now and the body
      // follows it upstream as it arrives.
      early_start_ = true;
      req_.body_complete = false;
      req_.body_streamed = true;
    }
    // RFC 9110 10.1.1: the client waits for this before sending the body.
    if (h.expect_continue && h.http_minor == 1 && start_ + h.head_len >= end_) out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  return 0;
}

void Connection::onMessage() {
  req_.base = buf_ + start_;
  req_.request_length = parser_.head().head_len + parser_.bodyBytes();
  early_start_ = false;
  req_.body_complete = true;
  if (lua_early_) {
    bodyArrivedDuringLua();
    return;
  }
  if (completeBody()) runPhases(true);
}

// The body a running handler started without is complete: the connection
// now waits for the handler, whose ngx.req.read_body waiters resume.
void Connection::bodyArrivedDuringLua() {
  lua_early_ = false;
  phase_ = Phase::kProcessing;
  if (!sealBody()) {
    if (task_) task_.reset();  // from the read callback, not from inside the task
    failBody();
    return;
  }
  if (task_) task_->bodyComplete();
}

void Connection::runPhases(bool with_server) {
  // set, return and set_by_lua*: the server's, then the location's (http/rewrite.h).
  RewriteOutcome rewrite = runRewritePhases(req_, server_->contentHandler(), with_server);
  if (rewrite.kind == RewriteOutcome::Kind::kError) {
    respond(500, "text/html", errorPage(500), {});
    finishRequest();
    return;
  }
  const conf::ReturnAction* ret = rewrite.ret;
  if (!ret && req_.location && req_.location->admin && server_->adminHandler()) {
    phase_ = Phase::kProcessing;
    server_->adminHandler()->handle(req_, *this);
    return;
  }
  LuaPhases lua;
  if (!ret && server_->contentHandler()) {
    const conf::HttpSettings& s = settings();
    if (s.rewrite_lua) lua.rewrite = &*s.rewrite_lua;
    if (s.access_lua) lua.access = &*s.access_lua;
    if (req_.location && !req_.location->content_lua.empty()) lua.content = &req_.location->content_lua;
  }
  if (lua.any()) {
    startLua(lua);
    return;
  }
  if (!ret && proxyLocation()) {
    startProxy();
    return;
  }
  if (!ret) {
    respond(404, "text/html", errorPage(404), {});
  } else if (ret->code == 444) {
    // nginx's 444: no response, and the connection closes once the answers
    // to earlier pipelined requests are out.
    req_.status = 444;
    keepalive_ = false;
    reset_after_write_ = true;
  } else {
    // A constant text (the usual `return 200 "..."`) is sent from the conf.
    std::string text;
    std::string_view value;
    if (ret->has_text && ret->text.isConstant()) {
      value = ret->text.constantText();
    } else if (ret->has_text) {
      evaluate(ret->text, req_, &text);
      value = text;
    }
    bool redirect = ret->code == 301 || ret->code == 302 || ret->code == 303 || ret->code == 307 || ret->code == 308;
    if (redirect) respond(ret->code, "text/html", errorPage(ret->code), absoluteRedirect(value));
    else if (ret->has_text) respond(ret->code, *settings().default_type, value, {});
    else respond(ret->code, "text/html", errorPage(ret->code), {});
  }
  finishRequest();
}

// The handlers may finish at once (finish() runs inside start()) or later
// from the loop; until then the connection waits in kProcessing. A task
// that finished, or handed the request to another (an internal redirect
// started one), is freed on a later loop turn.
void Connection::startLua(const LuaPhases& lua) {
  // While the body still arrives the connection stays in kBody (reading,
  // under client_body_timeout); then kProcessing.
  phase_ = lua_early_ ? Phase::kBody : Phase::kProcessing;
  uint64_t finishes = finishes_;
  auto task = server_->contentHandler()->start(req_, lua, *this);
  if (proxy_pending_) {
    // The phases ended inside start() and left the content to the proxy.
    proxy_pending_ = false;
    lua_task_ = std::move(task);
    startProxy();
    return;
  }
  adoptTask(std::move(task), finishes);
}

void Connection::adoptTask(std::unique_ptr<ContentTask> task, uint64_t finishes_before) {
  // Kept while it runs, or when it ended but its log phase waits for the
  // response to be written (log_task_ is it).
  if (!task_ && (finishes_ == finishes_before || log_deferred_)) task_ = std::move(task);
  else server_->retire(std::move(task));
}

bool Connection::proxyLocation() const {
  return req_.location && req_.location->proxy_pass && server_->proxyHandler();
}

// The proxy reads the whole body first (proxy_request_buffering): while
// it still arrives the connection stays in kBody, and the task starts its
// tries on bodyComplete().
void Connection::startProxy() {
  phase_ = lua_early_ ? Phase::kBody : Phase::kProcessing;
  proxying_ = true;
  uint64_t finishes = finishes_;
  auto task = server_->proxyHandler()->start(req_, *this, lua_task_.get());
  adoptTask(std::move(task), finishes);
}

void Connection::respondError(int status, const std::string& why) {
  // A handler started while the body arrived (a body error, 413): it ends.
  if (task_) task_.reset();
  lua_early_ = false;
  LogLevel level = status >= 500 && status != 501 && status != 505 ? LogLevel::kError : LogLevel::kInfo;
  const char* activity = !parser_.requestLineDone() ? "reading client request line"
                         : !parser_.headDone()      ? "reading client request headers"
                                                    : "reading client request body";
  TG_LOG_CONN_LIMITED(level, info_.id, "%s while %s%s", why.c_str(), activity, describe().c_str());
  keepalive_ = false;
  if (!req_.base) req_.base = buf_ + start_;
  if (req_.location && req_.location->admin) {
    // The admin API answers in JSON even before its handler runs (413).
    std::string body = "{\"error\":\"" + std::string(reasonPhrase(status)) + "\"}\n";
    respond(status, "application/json", body, {});
  } else {
    respond(status, "text/html", errorPage(status), {});
  }
  finishRequest();
}

// The first byte of a request is here: it counts from now ($request_time,
// $connection_requests include it, as in nginx).
void Connection::beginRequest() {
  request_active_ = true;
  info_.requests++;
  req_.start_ms = uv_now(server_->loop());
}

void Connection::finishRequest() {
  req_.base = buf_ + start_;
  if (req_.server && settings().log_lua && server_->contentHandler() && !closing_) {
    // log_by_lua* runs once the response is handed to the kernel: until
    // then the request (and its Lua context) stays, and the next one waits.
    flush();
    if (!closing_ && (write_pending_ || !out_.empty())) {
      log_deferred_ = true;
      phase_ = Phase::kProcessing;
      return;
    }
  }
  completeRequest();
}

// The access log line, log_by_lua*, then keepalive or close.
void Connection::completeRequest() {
  req_.base = buf_ + start_;
  req_.completed = headers_sent_ && body_ended_ && !reset_after_write_;
  server_->accessLog().log(req_);
  // log_by_lua*: after the response is sent; it cannot change it.
  if (req_.server && settings().log_lua && server_->contentHandler()) {
    // One that waits goes on without this connection (the server keeps it).
    HttpServer* server = server_;
    auto waiting = server_->contentHandler()->runLog(req_, *settings().log_lua, log_task_ ? log_task_ : aux_task_.get(),
                                                     [server](ContentTask* t) { server->releaseLog(t); });
    if (waiting) server_->keepLog(std::move(waiting));
  }
  // Logged: the upstream head's fields are spare for the next one parsed.
  req_.upstream.releaseHeaders();
  log_task_ = nullptr;
  tunnel_ = nullptr;
  output_held_ = false;
  aux_task_.reset();
  if (lua_task_) server_->retire(std::move(lua_task_));
  proxying_ = false;
  req_.body.reset();  // the request has ended: its temp file goes now
  if (!keepalive_) {
    close_after_write_ = true;
    return;
  }
  start_ = parsed_;
  phase_ = start_ < end_ ? Phase::kHead : Phase::kIdle;
  startRequest();
  if (phase_ == Phase::kHead) beginRequest();  // a pipelined request is already waiting
}

void Connection::flush() {
  if (closing_) return;
  if (tls_ && !write_pending_) {
    sealTlsOutput();
    if (closing_) return;
  }
  std::string& bytes = tls_ ? wire_ : out_;  // what goes to the socket
  if (!write_pending_ && !bytes.empty()) {
    uv_buf_t b = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "writev() failed (%d: %s) while sending response to client%s", -n,
                  uv_strerror(n), describe().c_str());
      close();
      return;
    }
    if (static_cast<size_t>(n) == bytes.size()) {
      bytes.clear();
    } else {
      writing_.assign(bytes, static_cast<size_t>(n), std::string::npos);
      bytes.clear();
      send_start_ms_ = uv_now(server_->loop());
      uv_buf_t wb = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
      write_req_.data = this;
      uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &wb, 1, onWrite);
      write_pending_ = true;
    }
  }
  if (!write_pending_ && out_.empty() && reset_after_write_) {
    close();
    return;
  }
  if (!write_pending_ && out_.empty() && close_after_write_) startLingeringClose();
}

void Connection::onWrite(uv_write_t* req, int status) noexcept {
  static_cast<Connection*>(req->data)->afterWrite(status);
}

void Connection::afterWrite(int status) {
  write_pending_ = false;
  last_io_ms_ = uv_now(server_->loop());
  writing_.clear();
  if (status < 0) {
    if (status != UV_ECANCELED) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "writev() failed (%d: %s) while sending response to client%s", -status,
                  uv_strerror(status), describe().c_str());
    }
    close();
    return;
  }
  if (closing_) return;
  flush();
  if (log_deferred_ && !write_pending_ && out_.empty()) {
    // The response is out: its log phase runs now, then the next request.
    log_deferred_ = false;
    completeRequest();
    if (task_) server_->retire(std::move(task_));
    flush();
    if (closing_) return;
  }
  resumeReading();
  if (!closing_ && phase_ != Phase::kLingering) processInput();  // resume pipelined requests
  if (!closing_ && drain_cb_ && !write_pending_ && out_.empty()) {
    auto cb = std::move(drain_cb_);
    drain_cb_ = nullptr;
    cb();  // resumes a handler waiting in ngx.flush(true)
  }
}

// Reading stops while answers wait for a slow client or while a handler's
// request fills the buffer, and resumes once neither holds.
void Connection::pauseReading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void Connection::resumeReading() {
  if (client_eof_ && phase_ == Phase::kProcessing) return;  // nothing more will come
  // A running handler's request fills the buffer: wait for the handler.
  bool buffer_full = phase_ == Phase::kProcessing && buf_ && end_ >= cap_;
  bool tunnel_paused = phase_ == Phase::kTunnel && tunnel_paused_;  // the peer's back-pressure holds
  if (closing_ || reading_ || write_pending_ || buffer_full || tunnel_paused) return;
  startReads();
}

void Connection::startReads() {
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  reading_ = true;
  // TLS: plaintext already decrypted (or ciphertext already read) is not
  // announced by the socket again.
  if (tls_ && tls_->buffered()) scheduleTlsPump();
}

void Connection::startLingeringClose() {
  if (phase_ == Phase::kLingering || closing_) return;
  phase_ = Phase::kLingering;
  last_io_ms_ = linger_start_ms_ = uv_now(server_->loop());
  sendCloseNotify();
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), onShutdown) != 0) {
    close();
    return;
  }
  updateTimer();
}

void Connection::onShutdown(uv_shutdown_t*, int) noexcept {}

// --- timers -----------------------------------------------------------------------

namespace {

// A minimum average rate since `start`, with a grace period: the time by
// which `bytes` must have grown for the average to stay at or above `rate`.
constexpr uint64_t kMinRateGraceMs = 1000;

uint64_t rateDeadline(uint64_t start, uint64_t bytes, uint64_t rate) {
  uint64_t allowed = bytes * 1000 / rate;
  return start + (allowed > kMinRateGraceMs ? allowed : kMinRateGraceMs);
}

}  // namespace

uint64_t Connection::bytesSentSoFar() const {
  // libuv reports no partial progress of a uv_write; its queue size does.
  size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
  return writing_.size() > queued ? writing_.size() - queued : 0;
}

// A pure function of the connection's state, so that a timer firing early
// can recompute it.
uint64_t Connection::computeDeadline() const {
  const conf::HttpSettings& s = settings();
  if (phase_ == Phase::kLingering) {
    // While the worker drains, linger briefly: long enough for the answer
    // to reach the client before a reset, short enough not to hold the exit.
    uint64_t linger = server_->draining() ? kDrainLingeringMs : kLingeringTimeoutMs;
    return std::min(last_io_ms_ + linger, linger_start_ms_ + kLingeringTimeMs);
  }
  if (write_pending_) {
    uint64_t d = send_start_ms_ + *s.send_timeout_ms;
    if (*s.send_min_rate) d = std::min(d, rateDeadline(send_start_ms_, bytesSentSoFar(), *s.send_min_rate));
    return d;
  }
  switch (phase_) {
    case Phase::kIdle: return last_io_ms_ + *s.keepalive_timeout_ms;
    case Phase::kHead: return head_deadline_ms_;
    case Phase::kBody: {
      uint64_t d = last_io_ms_ + *s.client_body_timeout_ms;
      if (*s.client_body_min_rate) {
        d = std::min(d, rateDeadline(body_start_ms_, parser_.bodyBytes(), *s.client_body_min_rate));
      }
      return d;
    }
    default: return 0;
  }
}

bool Connection::belowMinRate() const {
  uint64_t now = uv_now(server_->loop());
  const conf::HttpSettings& s = settings();
  if (write_pending_) {
    return *s.send_min_rate && now >= rateDeadline(send_start_ms_, bytesSentSoFar(), *s.send_min_rate);
  }
  return phase_ == Phase::kBody && *s.client_body_min_rate &&
         now >= rateDeadline(body_start_ms_, parser_.bodyBytes(), *s.client_body_min_rate);
}

// Timers are lazy: re-arming a libuv timer on every request costs two heap
// operations, so an armed timer may fire before the current deadline;
// handleTimer() then re-arms for the rest.
void Connection::updateTimer() {
  if (closing_) return;
  deadline_ms_ = computeDeadline();
  armTimer();
}

void Connection::armTimer() {
  if (tls_pump_) return;  // armed to fire now (scheduleTlsPump); handleTimer re-arms after
  // No deadline (a handler runs): an armed timer stays, and fires to no
  // effect unless a deadline has come back by then.
  if (deadline_ms_ == 0) return;
  if (timer_fires_at_ != 0 && timer_fires_at_ <= deadline_ms_) return;
  uint64_t now = uv_now(server_->loop());
  timer_fires_at_ = deadline_ms_ > now ? deadline_ms_ : now;
  uv_timer_start(&timer_, onTimer, timer_fires_at_ - now, 0);
}

void Connection::onTimer(uv_timer_t* t) noexcept { static_cast<Connection*>(t->data)->handleTimer(); }

void Connection::handleTimer() {
  if (closing_) return;
  timer_fires_at_ = 0;
  if (cert_resume_) {
    cert_resume_ = false;
    cert_task_.reset();
    if (handshakeStep()) pumpTls();
    if (closing_) return;
  }
  if (tls_pump_) {
    tls_pump_ = false;
    pumpTls();
    if (closing_) return;
  }
  deadline_ms_ = computeDeadline();
  if (deadline_ms_ == 0) return;
  if (deadline_ms_ > uv_now(server_->loop())) {
    armTimer();
    return;
  }
  if (phase_ == Phase::kLingering || phase_ == Phase::kIdle) {
    close();
    return;
  }
  bool too_slow = belowMinRate();
  if (write_pending_) {
    TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "%s while sending response to client%s",
                too_slow ? "client read the response below send_min_rate" : "client timed out (110: Connection timed out)",
                describe().c_str());
    close();
    return;
  }
  if (phase_ == Phase::kHead && end_ == start_ && !request_active_) {
    close();  // connected and sent nothing: nothing to answer
    return;
  }
  const char* what = phase_ == Phase::kHead ? "reading client request headers" : "reading client request body";
  TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "%s while %s%s",
              too_slow ? "client sent the body below client_body_min_rate" : "client timed out (110: Connection timed out)",
              what, describe().c_str());
  keepalive_ = false;
  if (task_) task_.reset();  // a handler started while the body arrived ends with it
  lua_early_ = false;
  respond(408, "text/html", errorPage(408), {});
  finishRequest();
  flush();
}

// --- teardown ---------------------------------------------------------------------

void Connection::releaseBufferIfIdle() {
  // An idle keepalive connection holds no read buffer (DESIGN.md 9).
  if (phase_ == Phase::kIdle && start_ == end_ && buf_ && reading_) {
    server_->giveBuffer(buf_, cap_);
    buf_ = nullptr;
    cap_ = start_ = parsed_ = end_ = 0;
  }
}

void Connection::closeIfIdle() {
  // Only a keepalive connection between requests is idle. A new connection
  // whose first request is still on the wire gets served (with
  // "Connection: close"), as nginx does; client_header_timeout bounds it.
  if (phase_ == Phase::kIdle && info_.requests > 0) {
    close();
  } else if (phase_ == Phase::kLingering) {
    timer_fires_at_ = 0;  // force a re-arm: the drain lingering is shorter
    uv_timer_stop(&timer_);
    updateTimer();
  }
}

void Connection::close() {
  if (closing_) return;
  if (log_deferred_) {
    // The client went away before the response was out: log it anyway.
    log_deferred_ = false;
    keepalive_ = false;
    completeRequest();
  }
  sendCloseNotify();
  closing_ = true;
  // Cancels a running handler; it never calls finish() after this. It may
  // be on the stack (a write to the client failed inside its call), so it
  // is freed on a later turn; until then the sink ignores it (closing_).
  if (task_) server_->retire(std::move(task_));
  if (lua_task_) server_->retire(std::move(lua_task_));
  // Never on the stack here (it only schedules the resume): freed now,
  // while the handshake it holds is whole.
  cert_task_.reset();
  req_.body.reset();  // a temp file goes now, not when the handles are closed
  phase_ = Phase::kClosing;
  server_->unlink(this);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
}

void Connection::closeNow() {
  if (closing_) return;
  task_.reset();
  lua_task_.reset();
  close();
}

void Connection::onClose(uv_handle_t* h) noexcept {
  auto* c = static_cast<Connection*>(h->data);
  if (--c->open_handles_ == 0) delete c;
}

std::string Connection::describe() const {
  std::string s = ", client: " + info_.remote_addr;
  if (req_.server) s += ", server: " + req_.server->primaryName();
  if (parser_.headDone() && req_.base) {
    s += ", request: \"";
    s.append(parser_.head().request_line.in(req_.base));
    s += "\"";
  }
  if (!req_.host.empty()) {
    s += ", host: \"";
    s.append(req_.host);
    s += "\"";
  }
  return s;
}

}  // namespace tidegate::http
