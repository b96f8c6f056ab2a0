#include "proxy/proxy.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "conf/resolve.h"
#include "core/log.h"
#include "http/variables.h"
#include "proxy/proxy_task.h"

namespace tidegate::proxy {
namespace {

// nginx's list of the methods proxy_next_upstream treats as non-idempotent.
bool idempotent(std::string_view method) { return method != "POST" && method != "LOCK" && method != "PATCH"; }

// "host:port", the host in brackets when it is IPv6.
std::string peerText(const std::string& host, uint16_t port) {
  std::string text = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return text.append(1, ':').append(std::to_string(port));
}

}  // namespace

using core::LogLevel;

void ProxyTask::run() {
  const conf::ProxyPass& configured = *r_.location->proxy_pass;
  conf::ProxyPass evaluated;
  const conf::ProxyPass* pp = &configured;
  if (configured.has_vars) {
    std::string url, err;
    http::evaluate(configured.value, r_, &url);
    if (!conf::parseProxyUrl(url, &evaluated, &err)) {
      logError(LogLevel::kError, err + " in \"" + url + "\"");
      respondError(500);
      return;
    }
    pp = &evaluated;
    target_.from_variables = true;
  }
  target_.host = pp->host;
  target_.port = pp->port;
  target_.port_given = pp->port_given;
  target_.has_uri = pp->has_uri;
  target_.uri = pp->uri;
  target_.https = pp->https;
  r_.upstream.proxy_host = target_.proxyHost();
  r_.upstream.proxy_port = std::to_string(target_.port);
  m_.upstreams().sync();
  if (!target_.port_given) rt_ = m_.upstreams().find(target_.host);
  if (!rt_) {
    // Resolved at load (a fixed value), or an address literal.
    std::vector<std::string> addresses = pp->addresses;
    PeerAddress literal;
    std::string key = target_.host + ":" + std::to_string(target_.port);
    if (addresses.empty() && parsePeerAddress(key, &literal)) addresses.push_back(key);
    if (!addresses.empty()) rt_ = m_.upstreams().implicit(key, addresses);
  }
  if (!rt_) {
    // An upstream that does not exist (yet: the admin API may create it).
    logError(LogLevel::kError, "no upstream \"" + target_.host + "\" (not defined, or a host name that did not resolve)");
    http::UpstreamTry t;
    t.addr = target_.host;
    t.status = 502;
    r_.upstream.tries.push_back(t);
    respondError(502);
    return;
  }
  if (target_.https) prepareTls();
  is_head_ = r_.method() == "HEAD";
  non_idempotent_ = !idempotent(r_.method());
  buildRequest(r_, s_, target_, &req_);
  // proxy_buffering on: up to proxy_buffers wait for the client before the
  // upstream is paused; off: proxy_buffer_size.
  high_water_ = *s_.buffering ? *s_.buffers_number * *s_.buffers_size : *s_.buffer_size;
  if (!r_.body_complete && !r_.body_streamed) return;  // bodyComplete() starts the tries
  startTries();
}

void ProxyTask::startTries() {
  first_try_us_ = nowUs();
  if (r_.body.inFile() && req_.body_length > 0) {
    body_fd_ = ::open(r_.body.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (body_fd_ < 0) {
      logError(LogLevel::kCrit, std::string("open() \"") + r_.body.path() + "\" failed (" + std::to_string(errno) +
                                    ": " + strerror(errno) + ")");
      respondError(500);
      return;
    }
  }
  startTry();
}

void ProxyTask::startTry() {
  m_.upstreams().sync();  // a server that went out or came back since the last try
  if (balancerLua() && !runBalancerLua()) return;
  tryPeer();
}

void ProxyTask::tryPeer() {
  int64_t now = nowUs();
  if (!lua_choice_.peer && !pickPeer(now)) return;
  tries_++;
  const PeerAddress& addr = peerAddress();
  http::UpstreamTry t;
  t.addr = addr.text;
  r_.upstream.tries.push_back(std::move(t));
  try_start_us_ = now;
  request_sent_ = request_done_ = got_bytes_ = request_head_written_ = stream_last_ = false;
  body_offset_ = 0;

  IdleList& pooled = m_.pool().peer(poolKey());
  // Tries that wait for a connection come first.
  if (pooled.waiting == 0 && takePooled(pooled, now)) {
    r_.upstream.tries.back().connect_us = 0;
    sendRequest();
    return;
  }
  if (m_.pool().wait(pooled, this, rt_->pool_limits, now)) {
    state_ = State::kConnecting;  // (no connection yet: only the pool's turn moves it on)
    return;
  }
  connectNew();
}

bool ProxyTask::takePooled(IdleList& l, int64_t now_us) {
  while ((conn_ = ConnPool::take(l)) != nullptr) {
    conn_->attach(this, now_us);
    // A request that must not be sent twice goes only on a connection the
    // peer has not closed already (its close may not be read yet).
    if (!non_idempotent_ || conn_->peerOpen()) break;
    dropConnection();
  }
  conn_reused_ = conn_ != nullptr;
  return conn_reused_;
}

void ProxyTask::onPoolTurn(IdleList& l) {
  int64_t now = nowUs();
  if (takePooled(l, now)) {
    r_.upstream.tries.back().connect_us = now - try_start_us_;  // the wait
    sendRequest();
    return;
  }
  connectNew();
}

bool ProxyTask::pickPeer(int64_t now_us) {
  upstream::PickContext ctx;
  ctx.tried = tried_;
  ctx.now_us = now_us;
  if (rt_->conf && rt_->conf->hash_key) {
    std::string& key = rare().hash_key;
    if (key.empty()) http::evaluate(*rt_->conf->hash_key, r_, &key);
    ctx.hash_key = key;
  }
  std::optional<size_t> pick;
  if (rt_->conf->balancer == "lua") pick = pickWithLua(ctx);
  if (!pick) pick = rt_->balancer->pick(ctx);
  if (!pick) {
    if (r_.upstream.tries.empty()) {
      logError(LogLevel::kError, "no live upstreams while connecting to upstream");
      http::UpstreamTry t;
      t.addr = rt_->name;
      t.status = 503;
      r_.upstream.tries.push_back(t);
      respondError(503);
    } else {
      respondError(r_.upstream.tries.back().status);
    }
    return false;
  }
  peer_ = *pick;
  peer_gen_ = rt_->generation;
  peer_addr_ = rt_->peers[peer_].addr;
  have_peer_ = true;
  tried_.push_back(peer_);
  rt_->balancer->onStart(peer_);
  return true;
}

std::optional<size_t> ProxyTask::pickWithLua(const upstream::PickContext& ctx) {
  http::ContentHandler* lua = m_.contentHandler();
  if (!lua) return std::nullopt;
  UpstreamRuntime& rt = *rt_;
  uint64_t modules = m_.upstreams().moduleVersion();
  if (!rt.lua_balancer || rt.lua_balancer->generation != rt.generation || rt.lua_balancer->modules != modules) {
    rt.lua_balancer.reset();
    std::vector<http::ContentHandler::LuaBalancerPeer> peers;
    for (size_t i = 0; i < rt.balancer->size(); i++) {
      const upstream::Peer& p = rt.balancer->peer(i);
      peers.push_back({p.id(), p.host, p.port, p.weight, p.tier});
    }
    auto inst = std::make_unique<LuaBalancerInstance>();
    inst->host = lua;
    inst->generation = rt.generation;
    inst->modules = modules;
    std::string err;
    inst->handle = lua->newLuaBalancer(rt.conf->balancer_module, peers, &err);
    if (!inst->handle) {
      TG_LOG_CONN_LIMITED(LogLevel::kError, r_.conn->id, "lua balancer \"%s\" of upstream \"%s\": %s; using round robin",
                          rt.conf->balancer_module.c_str(), rt.name.c_str(), err.c_str());
    }
    rt.lua_balancer = std::move(inst);
  }
  if (!rt.lua_balancer->handle) return std::nullopt;
  std::string id, err;
  if (!lua->luaBalancerPick(rt.lua_balancer->handle, &id, &err)) {
    TG_LOG_CONN_LIMITED(LogLevel::kError, r_.conn->id, "lua balancer \"%s\" of upstream \"%s\": pick() failed: %s; using round robin",
                        rt.conf->balancer_module.c_str(), rt.name.c_str(), err.c_str());
    return std::nullopt;
  }
  std::optional<size_t> i = rt.balancer->indexOf(id);
  if (!i) {
    TG_LOG_CONN_LIMITED(LogLevel::kError, r_.conn->id, "lua balancer \"%s\" of upstream \"%s\" picked \"%s\", not one of its servers; using round robin",
                        rt.conf->balancer_module.c_str(), rt.name.c_str(), id.c_str());
    return std::nullopt;
  }
  // Health and `down` still rule: such a pick goes to round robin.
  if (rt.balancer->peer(*i).down || !rt.balancer->state(*i).healthy) return std::nullopt;
  for (size_t t : ctx.tried) {
    if (t == *i) return std::nullopt;
  }
  return i;
}

bool ProxyTask::runBalancerLua() {
  lua_choice_.peer = false;
  lua_choice_.keepalive = false;
  http::ContentHandler* lua = m_.contentHandler();
  if (!lua) {
    logError(LogLevel::kError, "balancer_by_lua* cannot run: no Lua VM");
    respondError(500);
    return false;
  }
  if (!lua_) {
    own_lua_ = lua->detached(r_, sink_);
    lua_ = own_lua_.get();
  }
  Rare& rare = this->rare();
  http::BalancerCall& call = rare.balancer_call;
  call = http::BalancerCall{};
  call.try_number = tries_ + 1;
  call.last_state = last_state_;
  call.last_status = last_status_;
  call.tries_allowed = lua_choice_.tries;
  call.max_tries = *s_.next_upstream_tries;
  bool ok = true;
  rare.balancer_run = lua->runBalancer(r_, *rt_->balancer_lua, lua_, &call, &ok, [this](bool ended_ok) {
    balancer_ok_ = ended_ok;
    uv_timer_start(balancer_timer_, onBalancerEnded, 0, 0);
  });
  if (!rare.balancer_run) return balancerResult(ok);
  state_ = State::kBalancer;
  if (!balancer_timer_) {
    balancer_timer_ = new uv_timer_t;
    uv_timer_init(r_.conn->loop, balancer_timer_);
    balancer_timer_->data = this;
  }
  uv_timer_start(balancer_timer_, onBalancerTimeout, *r_.settings().lua_balancer_timeout_ms, 0);
  return false;
}

void ProxyTask::onBalancerEnded(uv_timer_t* t) noexcept {
  auto* self = static_cast<ProxyTask*>(t->data);
  self->rare_->balancer_run.reset();
  if (self->balancerResult(self->balancer_ok_)) self->tryPeer();
}

// The code still waits: it is cancelled (its cosockets close).
void ProxyTask::onBalancerTimeout(uv_timer_t* t) noexcept {
  auto* self = static_cast<ProxyTask*>(t->data);
  self->rare_->balancer_run.reset();
  self->logError(LogLevel::kError, "balancer_by_lua* took longer than lua_balancer_timeout (" +
                                       std::to_string(*self->r_.settings().lua_balancer_timeout_ms) + "ms)");
  self->respondError(500);
}

bool ProxyTask::balancerResult(bool ok) {
  if (!ok) {
    respondError(500);  // logged with its traceback
    return false;
  }
  const http::BalancerCall& call = rare_->balancer_call;
  if (call.exit_status != 0) {
    // OpenResty's balancer: ngx.exit(status >= 300) answers with it,
    // ngx.exit(ngx.ERROR) (or any other value) with 500.
    respondError(call.exit_status >= 300 ? call.exit_status : 500);
    return false;
  }
  return applyBalancerCall(call);
}

bool ProxyTask::applyBalancerCall(const http::BalancerCall& call) {
  lua_choice_.tries += call.more_tries;
  for (int status : call.retry_on) lua_choice_.retry_on |= conf::nextUpstreamForStatus(status);
  if (call.connect_timeout_ms > 0) connect_timeout_ms_ = static_cast<uint64_t>(call.connect_timeout_ms);
  if (call.send_timeout_ms > 0) send_timeout_ms_ = static_cast<uint64_t>(call.send_timeout_ms);
  if (call.read_timeout_ms > 0) read_timeout_ms_ = static_cast<uint64_t>(call.read_timeout_ms);
  if (call.recreate_request) buildRequest(r_, s_, target_, &req_);
  if (call.peer_host.empty()) return true;  // the upstream's balancer picks (OpenResty's fallback)
  const PeerAddress* addr = m_.luaPeer(call.peer_host, call.peer_port);
  if (!addr) {
    logError(LogLevel::kError, "balancer_by_lua* set an invalid peer \"" + peerText(call.peer_host, call.peer_port) + "\"");
    respondError(500);
    return false;
  }
  rare().lua_peer = *addr;
  lua_choice_.peer = true;
  lua_choice_.keepalive = call.keepalive;
  lua_choice_.keepalive_timeout_ms = call.keepalive_timeout_ms;
  lua_choice_.keepalive_requests = call.keepalive_requests > 0 ? call.keepalive_requests : UINT64_MAX;
  return true;
}

const PeerAddress* ProxyModule::luaPeer(const std::string& host, uint16_t port) {
  if (!lua_peer_host_.empty() && host == lua_peer_host_ && port == lua_peer_port_) return &lua_peer_;
  PeerAddress addr;
  if (!parsePeerAddress(peerText(host, port), &addr)) return nullptr;
  lua_peer_ = std::move(addr);
  lua_peer_host_ = host;
  lua_peer_port_ = port;
  return &lua_peer_;
}

void ProxyTask::reconnectFresh() {
  fresh_retry_done_ = true;
  dropConnection();
  try_start_us_ = nowUs();
  request_sent_ = request_done_ = got_bytes_ = request_head_written_ = stream_last_ = false;
  body_offset_ = 0;
  connectNew();
}

void ProxyTask::connectNew() {
  conn_reused_ = false;
  const PeerAddress& peer = peerAddress();
  conn_ = UpstreamConn::create(&m_.pool(), poolKey(), nowUs());
  state_ = State::kConnecting;
  int status = 0;
  if (!conn_->connect(this, peer, &status)) {
    onConnected(status);  // failed at once: reported as a failed connect
    return;
  }
  conn_->setTimer(connect_timeout_ms_);
}

void ProxyTask::onConnected(int status) {
  if (status != 0) {
    conn_->stopTimer();
    fail(conf::kNextError, 502,
         std::string("connect() failed (") + std::to_string(-status) + ": " + strerror(-status) + ")");
    return;
  }
  if (target_.https) {
    startHandshake();  // under proxy_connect_timeout still
    return;
  }
  conn_->stopTimer();
  r_.upstream.tries.back().connect_us = nowUs() - try_start_us_;
  sendRequest();
}

void ProxyTask::onReadEnd(int status) {
  if (state_ == State::kTunnel) {
    endTunnel(nullptr);
    return;
  }
  if (state_ == State::kStreaming) {
    if (status == UV_EOF && parser_.finishOnEof()) {
      req_.keepalive = false;
      endResponse();
      return;
    }
    breakResponse(readFailure(status) + " while reading upstream");
    return;
  }
  // Before the head: a pooled connection the peer closed as we reused it
  // is replaced by a fresh one, once, without counting a try, when the
  // request may be sent again (idempotent, or nothing reached the peer).
  if (conn_ && conn_reused_ && !got_bytes_ && !fresh_retry_done_ && !body_streamed_ &&
      (!non_idempotent_ || !request_sent_)) {
    reconnectFresh();
    return;
  }
  fail(conf::kNextError, 502, readFailure(status) + " while reading response header from upstream");
}

std::string ProxyTask::readFailure(int status) const {
  if (status == UV_EOF) return "upstream prematurely closed connection";
  if (status == UV_EPROTO && conn_ && !conn_->tlsError().empty()) return conn_->tlsError();
  std::string why = "recv() failed (";
  why.append(std::to_string(-status)).append(": ").append(strerror(-status)).append(")");
  return why;
}

void ProxyTask::onTimeout() {
  if (state_ == State::kTunnel) {
    endTunnel("upstream timed out (110: Connection timed out) while proxying upgraded connection");
    return;
  }
  if (state_ == State::kStreaming) {
    breakResponse("upstream timed out (110: Connection timed out) while reading upstream");
    return;
  }
  fail(conf::kNextTimeout, 504, std::string("upstream timed out (110: Connection timed out) while ") + activity());
}

const char* ProxyTask::activity() const {
  switch (state_) {
    case State::kBalancer: return "running balancer_by_lua*";
    case State::kConnecting: return "connecting to upstream";
    case State::kHandshaking: return "SSL handshaking to upstream";
    case State::kSending: return "sending request to upstream";
    default: return "reading response header from upstream";
  }
}

bool ProxyTask::retriesOn(uint32_t condition) const {
  uint32_t next = *s_.next_upstream;
  return (!(next & conf::kNextOff) && (next & condition)) || (lua_choice_.retry_on & condition);
}

bool ProxyTask::mayRetry(uint32_t condition) const {
  uint32_t next = *s_.next_upstream;
  if (!retriesOn(condition) || head_sent_) return false;
  if (body_streamed_) return false;  // the body cannot be sent again
  // A request that is not idempotent goes once, unless nothing of it was
  // sent or proxy_next_upstream non_idempotent allows it.
  if (non_idempotent_ && request_sent_ && !(next & conf::kNextNonIdempotent)) return false;
  if (*s_.next_upstream_tries > 0 && tries_ >= *s_.next_upstream_tries) return false;
  if (*s_.next_upstream_timeout_ms > 0 &&
      static_cast<uint64_t>(nowUs() - first_try_us_) / 1000 >= *s_.next_upstream_timeout_ms) {
    return false;
  }
  // balancer_by_lua* grants tries with set_more_tries(); otherwise each
  // server is tried once at most.
  if (balancerLua()) return tries_ < lua_choice_.tries;
  return tried_.size() < rt_->peers.size();
}

void ProxyTask::fail(uint32_t condition, int status, const std::string& why) {
  bool is_status = conf::nextUpstreamForStatus(status) != 0 && condition == conf::nextUpstreamForStatus(status);
  if (!is_status) {
    std::string line = why;
    if (line.find(" while ") == std::string::npos) line.append(" while ").append(activity());
    logError(LogLevel::kError, line);
  }
  http::UpstreamTry& t = r_.upstream.tries.back();
  if (t.status == 0 || !is_status) t.status = status;
  int64_t now = nowUs();
  t.response_us = now - try_start_us_;
  dropConnection();
  // Passive health: errors, timeouts and bad heads always count; statuses
  // only when proxy_next_upstream names them (as nginx's max_fails).
  bool counts = condition != conf::kNextHttp403 && condition != conf::kNextHttp404;
  endTry(counts ? upstream::Outcome::kFailed : upstream::Outcome::kOk, now);
  last_state_ = counts ? "failed" : "next";  // nginx's NGX_PEER_FAILED / NGX_PEER_NEXT
  last_status_ = t.status;
  if (counts) reportFailure(why.empty() ? "status " + std::to_string(t.status) : why);
  if (mayRetry(condition)) {
    startTry();
    return;
  }
  respondError(status);
}

void ProxyTask::breakResponse(const std::string& why) {
  logError(LogLevel::kError, why);
  dropConnection();
  endTry(upstream::Outcome::kFailed);
  state_ = State::kDone;
  http::ContentResult res;
  res.aborted = true;
  sink_.finish(std::move(res), lua_);
}

void ProxyTask::respondError(int status) {
  state_ = State::kDone;
  dropConnection();
  http::ContentResult res;
  res.status = status;
  sink_.finish(std::move(res), lua_);
}

void ProxyTask::clientAborted() {
  if (state_ == State::kDone) return;
  if (*s_.ignore_client_abort) return;
  if (rare_ && rare_->balancer_run) {
    rare_->balancer_run.reset();  // cancelled: its cosockets close
    uv_timer_stop(balancer_timer_);
  }
  TG_LOG_CONN(LogLevel::kInfo, r_.conn->id, "client prematurely closed connection while %s%s", activity(),
              http::describeRequest(r_).c_str());
  m_.pool().cancelWait(this);
  dropConnection();
  if (have_peer_) endTry(upstream::Outcome::kOk);
  state_ = State::kDone;
  http::ContentResult res;
  res.aborted = true;
  res.status = 499;
  sink_.finish(std::move(res), lua_);
}

void ProxyTask::endTry(upstream::Outcome outcome, int64_t now_us) {
  if (!have_peer_) return;
  have_peer_ = false;
  size_t i = rt_->indexNow(peer_, peer_gen_, peer_addr_.text);
  int64_t latency = now_us - try_start_us_;
  if (i != std::string::npos) rt_->balancer->onFinish(i, latency, outcome, now_us);
  if (rt_->conf->balancer == "lua" && rt_->lua_balancer && rt_->lua_balancer->handle && m_.contentHandler()) {
    m_.contentHandler()->luaBalancerFeedback(rt_->lua_balancer->handle, peer_addr_.text,
                                             outcome == upstream::Outcome::kOk, static_cast<double>(latency) / 1000.0);
  }
}

void ProxyTask::reportFailure(std::string_view why) {
  if (lua_choice_.peer) return;
  if (m_.upstreams().reportFailure(*rt_, peer_addr_.text, why)) {
    logError(LogLevel::kWarn, "upstream server temporarily disabled");
  }
}

void ProxyTask::dropConnection() {
  if (!conn_) return;
  conn_->close();
  conn_ = nullptr;
}

void ProxyTask::logError(LogLevel level, const std::string& why) {
  std::string line = why;
  line.append(http::describeRequest(r_));
  if (!r_.upstream.tries.empty() && !r_.upstream.tries.back().addr.empty()) {
    line.append(target_.https ? ", upstream: \"https://" : ", upstream: \"http://");
    line.append(r_.upstream.tries.back().addr);
    // nginx adds the URI of the upstream request (its request line's target).
    size_t sp = req_.head.find(' ');
    size_t end = sp == std::string::npos ? sp : req_.head.find(' ', sp + 1);
    if (end != std::string::npos) line.append(req_.head, sp + 1, end - sp - 1);
    line.append(1, '"');
  }
  TG_LOG_CONN(level, r_.conn->id, "%s", line.c_str());
}

ProxyModule::ProxyModule(uv_loop_t* loop, const conf::Config& cfg, shm::UpstreamTable& table)
    : loop_(loop), pool_(loop), upstreams_(cfg, table), max_idle_(static_cast<uint64_t>(cfg.worker_connections)) {
  // Room for every buffer set kept, so that giving one back never allocates.
  spare_buffers_.reserve(std::min<uint64_t>(max_idle_, kMaxSpareBuffers));
}

ProxyModule::~ProxyModule() = default;

std::unique_ptr<ExchangeBuffers> ProxyModule::takeBuffers() {
  if (spare_buffers_.empty()) return std::make_unique<ExchangeBuffers>();
  std::unique_ptr<ExchangeBuffers> b = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return b;
}

void ProxyModule::giveBuffers(std::unique_ptr<ExchangeBuffers> b) {
  if (spare_buffers_.size() >= spare_buffers_.capacity()) return;
  // A set that grew for an unusual exchange (a large head) is not kept.
  if (b->request_head.capacity() + b->parser.keptBytes() > kMaxSpareBytesEach) return;
  b->parser.onBody({});  // its callback points to the task that is ending
  b->request_head.clear();
  b->tried.clear();
  spare_buffers_.push_back(std::move(b));
}

std::unique_ptr<http::ContentTask> ProxyModule::start(http::Request& r, http::ContentSink& sink,
                                                      http::ContentTask* lua) {
  auto task = std::make_unique<ProxyTask>(*this, r, sink, lua);
  ProxyTask* raw = task.get();
  raw->run();
  return task;
}

void ProxyModule::shutdown() { pool_.shutdown(); }

}  // namespace tidegate::proxy
