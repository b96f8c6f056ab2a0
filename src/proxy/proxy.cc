#include "proxy/proxy.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "http/ascii.h"
#include "conf/resolve.h"
#include "http/variables.h"
#include "proxy/request_builder.h"
#include "proxy/response_parser.h"

namespace tidegate::proxy {
namespace {

using core::LogLevel;
using http::iequals;

// A request body kept in a file goes upstream in pieces of this size.
constexpr size_t kFileChunk = 64 * 1024;

int64_t nowUs() { return static_cast<int64_t>(uv_hrtime() / 1000); }

// nginx's list of the methods proxy_next_upstream treats as non-idempotent.
bool idempotent(std::string_view method) { return method != "POST" && method != "LOCK" && method != "PATCH"; }

// Response headers the client never sees from an upstream: hop-by-hop ones
// and nginx's default proxy_hide_header list (the connection writes its own
// Date and Server).
bool hiddenByDefault(std::string_view name) {
  switch (name.size()) {
    case 4: return iequals(name, "date");
    case 5: return iequals(name, "x-pad");
    case 6: return iequals(name, "server");
    case 7: return iequals(name, "upgrade") || iequals(name, "trailer");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16: return iequals(name, "proxy-connection") || iequals(name, "x-accel-expires") ||
                    iequals(name, "x-accel-charset");
    case 17: return iequals(name, "transfer-encoding") || iequals(name, "x-accel-redirect");
    case 18: return iequals(name, "x-accel-buffering");
    case 19: return iequals(name, "x-accel-limit-rate");
    default: return false;
  }
}

bool listed(const std::vector<std::string>& list, std::string_view name) {
  for (const std::string& n : list) {
    if (iequals(n, name)) return true;
  }
  return false;
}

// One proxied request. Owned by the downstream connection (as its content
// task); owns its upstream connection while a try runs.
class ProxyTask final : public http::ContentTask,
                        private UpstreamConn::User,
                        private http::ContentSink::TunnelPeer {
 public:
  ProxyTask(ProxyModule& m, http::Request& r, http::ContentSink& sink, http::ContentTask* lua)
      : m_(m),
        r_(r),
        sink_(sink),
        lua_(lua),
        s_(r.settings().proxy),
        connect_timeout_ms_(*s_.connect_timeout_ms),
        send_timeout_ms_(*s_.send_timeout_ms),
        read_timeout_ms_(*s_.read_timeout_ms) {
    parser_.onBody([this](std::string_view data) { forwardBody(data); });
  }
  ~ProxyTask() override {
    if (waiting_drain_) sink_.cancelDrain();
    dropConnection();
    if (body_fd_ >= 0) ::close(body_fd_);
  }

  void run();
  void clientAborted() override;
  void bodyComplete() override {
    if (state_ == State::kWaitBody) startTries();
    else bodyAvailable();
  }
  void bodyAvailable() override {
    if (state_ == State::kSending && r_.body_streamed && !stream_writing_ && request_head_written_) pumpBody();
  }

 private:
  enum class State { kWaitBody, kConnecting, kSending, kWaitHead, kStreaming, kTunnel, kDone };

  void startTries();
  void startTry();
  // The upstream's balancer picks this try's peer. False if none may be
  // picked (the request was answered).
  bool pickPeer();
  // balancer_by_lua*: the upstream's code runs before every try and may
  // set the peer, grant more tries, change timeouts (http::BalancerCall).
  // False if the request was answered instead (an error in the code,
  // ngx.exit).
  bool runBalancerLua();
  bool applyBalancerCall(const http::BalancerCall& call);
  bool balancerLua() const { return rt_->conf && !rt_->conf->balancer_lua.empty(); }
  const PeerAddress& peerAddress() const { return lua_choice_.peer ? lua_choice_.addr : rt_->peers[peer_].addr; }
  void connectNew();
  // The pooled connection just used was closed by the peer: the same peer
  // again on a fresh connection, once, without counting a try.
  void reconnectFresh();
  bool mayRetry(uint32_t condition) const;
  // proxy_next_upstream names `condition`, or retry_on did for this request.
  bool retriesOn(uint32_t condition) const;
  void sendRequest();
  void sendMoreBody();
  // proxy_request_buffering off: the next piece of the client's body, as
  // it arrives (chunk-framed when its length is unknown).
  void pumpBody();
  void onConnected(int status) override;
  void onWritten(int status) override;
  void onData(const char* data, size_t len) override;
  void onReadEnd(int status) override;
  void onTimeout() override;
  void handleHead();
  // 101 to an Upgrade request: bytes both ways until either side ends.
  void startTunnel();
  void onClientData(const char* data, size_t len) override;
  void onClientEnd() override;
  void endTunnel(const char* why);
  void forwardBody(std::string_view data);
  void endResponse();
  void pauseForClient();
  // Parses one read from the upstream and acts on it.
  void consume(const char* data, size_t len);
  // A try failed before the response head reached the client: retried on
  // the next peer when proxy_next_upstream allows, else answered with
  // `status`. `condition` is the NextUpstream bit; `why` nginx's log text.
  void fail(uint32_t condition, int status, const std::string& why);
  // The response broke after its head went to the client: the client sees
  // it truncated and the connection closes.
  void breakResponse(const std::string& why);
  void respondError(int status);
  void dropConnection();
  void logError(LogLevel level, const std::string& why);
  void endTry(upstream::Outcome outcome);
  const char* activity() const;

  ProxyModule& m_;
  http::Request& r_;
  http::ContentSink& sink_;
  http::ContentTask* lua_;
  const conf::ProxySettings& s_;
  // proxy_*_timeout, unless balancer_by_lua* set others for the request.
  uint64_t connect_timeout_ms_;
  uint64_t send_timeout_ms_;
  uint64_t read_timeout_ms_;
  State state_ = State::kWaitBody;

  UpstreamRuntime* rt_ = nullptr;
  ProxyTarget target_;
  BuiltRequest req_;
  bool is_head_ = false;
  bool non_idempotent_ = false;

  // The current try.
  UpstreamConn* conn_ = nullptr;
  size_t peer_ = 0;
  bool have_peer_ = false;
  bool request_sent_ = false;     // a byte of the request may have reached the peer
  bool request_done_ = false;     // the whole request is in the kernel
  bool got_bytes_ = false;        // the peer sent something on this connection
  bool conn_reused_ = false;      // the connection came from the pool
  bool fresh_retry_done_ = false; // a pooled connection that was closed was replaced once
  int64_t try_start_us_ = 0;
  uint64_t body_offset_ = 0;
  int body_fd_ = -1;
  std::string body_chunk_;
  uv_buf_t bufs_[2];
  ResponseParser parser_;
  std::vector<size_t> tried_;
  std::string hash_key_;  // chash: the key, evaluated once per request
  std::string tunnel_buf_;  // client bytes on their way upstream
  // A streamed request body (proxy_request_buffering off).
  std::string stream_piece_;
  std::string chunk_head_;
  bool stream_writing_ = false;
  bool stream_last_ = false;         // the piece being written ends the body
  bool body_streamed_ = false;       // some of the body left the client connection: no replay
  bool request_head_written_ = false;
  uint64_t tries_ = 0;
  int64_t first_try_us_ = 0;
  // The last failed try, for ngx.balancer.get_last_failure(): "failed" or
  // "next" (a 403 or 404), and its status.
  std::string last_state_;
  int last_status_ = 0;

  // balancer_by_lua*: what the upstream's code chose.
  struct LuaChoice {
    bool peer = false;  // this try's peer: `addr`, not the balancer's pick
    PeerAddress addr;
    bool keepalive = false;  // enable_keepalive() for this try
    uint64_t keepalive_timeout_ms = 0;
    uint64_t keepalive_requests = 0;
    uint64_t tries = 1;     // tries allowed: 1 + the more tries granted
    uint32_t retry_on = 0;  // NextUpstream bits of the retry_on statuses
  };
  LuaChoice lua_choice_;
  // The request's Lua context when no Lua phase made one: ngx.ctx lasts
  // from one try to the next and reaches the filters and log_by_lua*.
  std::unique_ptr<http::ContentTask> own_lua_;

  bool head_sent_ = false;       // the response head went to the client
  bool waiting_drain_ = false;
  bool intercept_ = false;       // the upstream's error response is replaced by ours
  size_t high_water_ = 0;
};

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
  r_.upstream.proxy_host = target_.proxyHost();
  r_.upstream.proxy_port = std::to_string(target_.port);
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
  rt_->refreshHealth(uv_now(m_.loop()));
  if (balancerLua() && !runBalancerLua()) return;
  if (!lua_choice_.peer && !pickPeer()) return;
  tries_++;
  const PeerAddress& addr = peerAddress();
  http::UpstreamTry t;
  t.addr = addr.text;
  r_.upstream.tries.push_back(std::move(t));
  try_start_us_ = nowUs();
  request_sent_ = request_done_ = got_bytes_ = request_head_written_ = stream_last_ = false;
  body_offset_ = 0;

  while ((conn_ = m_.pool().take(addr.text)) != nullptr) {
    conn_->attach(this);
    // A request that must not be sent twice goes only on a connection the
    // peer has not closed already (its close may not be read yet).
    if (!non_idempotent_ || conn_->peerOpen()) break;
    dropConnection();
  }
  conn_reused_ = conn_ != nullptr;
  if (conn_) {
    r_.upstream.tries.back().connect_us = 0;
    sendRequest();
    return;
  }
  connectNew();
}

bool ProxyTask::pickPeer() {
  upstream::PickContext ctx;
  ctx.tried = tried_;
  ctx.now_us = nowUs();
  if (rt_->conf && rt_->conf->hash_key) {
    if (hash_key_.empty()) http::evaluate(*rt_->conf->hash_key, r_, &hash_key_);
    ctx.hash_key = hash_key_;
  }
  std::optional<size_t> pick = rt_->balancer->pick(ctx);
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
  have_peer_ = true;
  tried_.push_back(peer_);
  rt_->balancer->onStart(peer_);
  return true;
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
  http::BalancerCall call;
  call.try_number = tries_ + 1;
  call.last_state = last_state_;
  call.last_status = last_status_;
  call.tries_allowed = lua_choice_.tries;
  call.max_tries = *s_.next_upstream_tries;
  if (!lua->runBalancer(r_, rt_->conf->balancer_lua, lua_, &call)) {
    respondError(500);  // logged with its traceback
    return false;
  }
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
  bool v6 = call.peer_host.find(':') != std::string::npos;
  std::string text = v6 ? "[" + call.peer_host + "]" : call.peer_host;
  text.append(1, ':').append(std::to_string(call.peer_port));
  if (!parsePeerAddress(text, &lua_choice_.addr)) {
    logError(LogLevel::kError, "balancer_by_lua* set an invalid peer \"" + text + "\"");
    respondError(500);
    return false;
  }
  lua_choice_.peer = true;
  lua_choice_.keepalive = call.keepalive;
  lua_choice_.keepalive_timeout_ms = call.keepalive_timeout_ms;
  lua_choice_.keepalive_requests = call.keepalive_requests > 0 ? call.keepalive_requests : UINT64_MAX;
  return true;
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
  conn_ = UpstreamConn::create(&m_.pool(), peerAddress());
  state_ = State::kConnecting;
  int status = 0;
  if (!conn_->connect(this, &status)) {
    fail(conf::kNextError, 502,
         std::string("connect() failed (") + std::to_string(-status) + ": " + strerror(-status) + ")");
    return;
  }
  conn_->setTimer(connect_timeout_ms_);
}

void ProxyTask::onConnected(int status) {
  conn_->stopTimer();
  if (status != 0) {
    fail(conf::kNextError, 502,
         std::string("connect() failed (") + std::to_string(-status) + ": " + strerror(-status) + ")");
    return;
  }
  r_.upstream.tries.back().connect_us = nowUs() - try_start_us_;
  sendRequest();
}

void ProxyTask::sendRequest() {
  state_ = State::kSending;
  parser_.reset(is_head_, req_.upgrade, *s_.buffer_size);
  conn_->countRequest();
  request_sent_ = true;
  // Read from the start: an early answer (or a close) stops the upload.
  conn_->startReading();
  unsigned n = 0;
  bufs_[n++] = uv_buf_init(req_.head.data(), static_cast<unsigned>(req_.head.size()));
  if (req_.body_length > 0 && !r_.body.inFile() && !r_.body_streamed) {
    const std::string& data = r_.body.data();
    bufs_[n++] = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    body_offset_ = data.size();
  }
  // The head (and a body in memory) usually goes in one writev at once.
  int error = 0;
  if (conn_->writeNow(bufs_, n, &error)) {
    onWritten(0);
    return;
  }
  if (error != 0) {
    onWritten(error);
    return;
  }
  conn_->setTimer(send_timeout_ms_);
}

// A body in a file: the next piece once the previous one is in the kernel.
void ProxyTask::sendMoreBody() {
  uint64_t left = static_cast<uint64_t>(req_.body_length) - body_offset_;
  body_chunk_.resize(std::min<uint64_t>(left, kFileChunk));
  ssize_t n = ::pread(body_fd_, body_chunk_.data(), body_chunk_.size(), static_cast<off_t>(body_offset_));
  if (n <= 0) {
    logError(LogLevel::kCrit, std::string("pread() \"") + r_.body.path() + "\" failed");
    dropConnection();
    endTry(upstream::Outcome::kOk);
    respondError(500);
    return;
  }
  body_offset_ += static_cast<uint64_t>(n);
  bufs_[0] = uv_buf_init(body_chunk_.data(), static_cast<unsigned>(n));
  conn_->setTimer(send_timeout_ms_);  // first: a write that fails at once resets it
  conn_->write(bufs_, 1);
}

void ProxyTask::pumpBody() {
  bool last = sink_.takeRequestBody(&stream_piece_);
  if (stream_piece_.empty() && !last) {
    conn_->stopTimer();  // waiting for the client (client_body_timeout watches it)
    return;
  }
  if (!stream_piece_.empty()) body_streamed_ = true;
  unsigned n = 0;
  bool chunked = req_.body_length < 0;
  if (chunked && !stream_piece_.empty()) {
    char hex[24];
    int len = snprintf(hex, sizeof(hex), "%zx\r\n", stream_piece_.size());
    chunk_head_.assign(hex, static_cast<size_t>(len));
    stream_piece_.append("\r\n");
    bufs_[n++] = uv_buf_init(chunk_head_.data(), static_cast<unsigned>(chunk_head_.size()));
  }
  if (chunked && last) stream_piece_.append("0\r\n\r\n");
  bufs_[n++] = uv_buf_init(stream_piece_.data(), static_cast<unsigned>(stream_piece_.size()));
  stream_writing_ = true;
  stream_last_ = last;
  conn_->setTimer(send_timeout_ms_);  // first: a write that fails at once resets it
  conn_->write(bufs_, n);
}

void ProxyTask::onWritten(int status) {
  if (state_ == State::kTunnel) {
    if (status != 0) endTunnel("upstream closed the upgraded connection");
    else sink_.pauseTunnel(false);
    return;
  }
  if (status != 0) {
    if (state_ != State::kSending) return;  // the response already came; the upload just stops
    if (conn_reused_ && !got_bytes_ && !fresh_retry_done_ && !body_streamed_) {
      reconnectFresh();  // the peer had closed it: nothing of the request reached it
      return;
    }
    fail(conf::kNextError, 502,
         std::string("writev() failed (") + std::to_string(-status) + ": " + strerror(-status) + ")");
    return;
  }
  if (state_ != State::kSending) return;
  request_head_written_ = true;
  if (r_.body_streamed && req_.body_length != 0) {
    stream_writing_ = false;
    if (!stream_last_) {
      pumpBody();
      return;
    }
  } else if (body_offset_ < static_cast<uint64_t>(req_.body_length)) {
    sendMoreBody();
    return;
  }
  request_done_ = true;
  state_ = State::kWaitHead;
  conn_->setTimer(read_timeout_ms_);
}

void ProxyTask::onData(const char* data, size_t len) {
  got_bytes_ = true;
  // What this read produces for the client goes out in one write.
  sink_.holdOutput(true);
  consume(data, len);
  sink_.holdOutput(false);
  // Written now, or waiting for the client: past the limit, pause.
  if (state_ == State::kStreaming || state_ == State::kTunnel) pauseForClient();
}

void ProxyTask::consume(const char* data, size_t len) {
  if (state_ == State::kTunnel) {
    conn_->setTimer(read_timeout_ms_);
    sink_.tunnelWrite(std::string_view(data, len));
    return;
  }
  if (state_ == State::kStreaming || state_ == State::kWaitHead || state_ == State::kSending) {
    conn_->setTimer(read_timeout_ms_);
  }
  while (len > 0 || state_ == State::kStreaming) {
    size_t used = 0;
    ResponseParser::Event ev = parser_.execute(data, len, &used);
    data += used;
    len -= used;
    switch (ev) {
      case ResponseParser::Event::kNeedMore:
        if (len == 0) return;
        break;
      case ResponseParser::Event::kHead:
        handleHead();
        if (state_ == State::kTunnel) {
          if (len > 0) sink_.tunnelWrite(std::string_view(data, len));
          return;
        }
        if (state_ != State::kStreaming) return;  // retried or answered
        break;
      case ResponseParser::Event::kDone:
        if (len > 0) req_.keepalive = false;  // more than the message: never reused
        endResponse();
        return;
      case ResponseParser::Event::kError:
        if (head_sent_ || state_ == State::kStreaming) breakResponse(parser_.errorText() + " while reading upstream");
        else fail(conf::kNextInvalidHeader, 502, parser_.errorText() + " while reading response header from upstream");
        return;
    }
  }
}

void ProxyTask::handleHead() {
  const ResponseHead& h = parser_.head();
  http::UpstreamTry& t = r_.upstream.tries.back();
  t.status = h.status;
  t.header_us = nowUs() - try_start_us_;
  uint32_t cond = conf::nextUpstreamForStatus(h.status);
  if (cond && retriesOn(cond)) {
    // A status named in proxy_next_upstream: the next peer if one may be
    // tried, else this answer goes to the client as it is.
    if (mayRetry(cond)) {
      fail(cond, h.status, {});
      return;
    }
    if (cond != conf::kNextHttp403 && cond != conf::kNextHttp404 && !lua_choice_.peer &&
        rt_->reportFailure(peer_, uv_now(m_.loop()))) {
      logError(LogLevel::kWarn, "upstream server temporarily disabled");
    }
  }
  if (!request_done_) {
    // An early answer: the rest of the body is not sent, and the
    // connection cannot be reused.
    req_.keepalive = false;
  }
  if (h.upgrade) {
    r_.upstream.headers = h.headers;
    startTunnel();
    return;
  }
  state_ = State::kStreaming;
  if (*s_.intercept_errors && h.status >= 300 && h.status != 304) {
    // No error_page yet: our own page for that status replaces the upstream's.
    intercept_ = true;
    req_.keepalive = false;
    dropConnection();
    endTry(upstream::Outcome::kOk);
    respondError(h.status);
    return;
  }
  http::ContentResult res;
  res.status = h.status;
  res.headers_disposable = true;
  res.headers.reserve(h.headers.size());
  const std::vector<std::string>& hide = *s_.hide_headers;
  const std::vector<std::string>& pass = *s_.pass_headers;
  for (const auto& [name, value] : h.headers) {
    if (listed(hide, name)) continue;
    if (hiddenByDefault(name) && !listed(pass, name)) continue;
    res.headers.emplace_back(name, value);
  }
  r_.upstream.headers = parser_.takeHeaders();  // for $upstream_http_*
  head_sent_ = true;
  sink_.flushOutput(res, false, lua_);
}

void ProxyTask::startTunnel() {
  state_ = State::kTunnel;
  head_sent_ = true;
  http::HeaderList headers;
  for (const auto& [name, value] : parser_.head().headers) {
    if (iequals(name, "upgrade") || !(hiddenByDefault(name) || iequals(name, "content-length"))) {
      headers.emplace_back(name, value);
    }
  }
  conn_->setTimer(read_timeout_ms_);
  sink_.startTunnel(headers, this);
}

void ProxyTask::onClientData(const char* data, size_t len) {
  if (state_ != State::kTunnel || !conn_) return;
  // One write at a time: the client waits until this one is in the kernel.
  tunnel_buf_.assign(data, len);
  bufs_[0] = uv_buf_init(tunnel_buf_.data(), static_cast<unsigned>(tunnel_buf_.size()));
  sink_.pauseTunnel(true);
  conn_->setTimer(read_timeout_ms_);
  conn_->write(bufs_, 1);
}

void ProxyTask::onClientEnd() { endTunnel(nullptr); }

void ProxyTask::endTunnel(const char* why) {
  if (state_ != State::kTunnel) return;
  if (why) logError(LogLevel::kInfo, why);
  r_.upstream.tries.back().response_us = nowUs() - try_start_us_;
  dropConnection();
  endTry(upstream::Outcome::kOk);
  state_ = State::kDone;
  http::ContentResult res;
  res.aborted = true;  // the connection closes once what is queued is out
  sink_.finish(std::move(res), lua_);
}

void ProxyTask::forwardBody(std::string_view data) {
  r_.upstream.tries.back().length += static_cast<int64_t>(data.size());
  sink_.streamBody(data, false, lua_);
}

void ProxyTask::pauseForClient() {
  // The client reads slower than the upstream sends: stop reading the
  // upstream until what waits for the client is written.
  if (waiting_drain_ || !conn_ || sink_.pendingOutput() <= high_water_) return;
  bool drained = sink_.waitDrain([this] {
    waiting_drain_ = false;
    if (!conn_) return;
    conn_->startReading();
    conn_->setTimer(read_timeout_ms_);
  });
  if (drained) return;
  waiting_drain_ = true;
  conn_->stopReading();
  conn_->stopTimer();
}

void ProxyTask::endResponse() {
  http::UpstreamTry& t = r_.upstream.tries.back();
  t.response_us = nowUs() - try_start_us_;
  const ResponseHead& h = parser_.head();
  bool reuse = req_.keepalive && h.keep_alive && request_done_ && !parser_.bodyUntilClose();
  UpstreamConn* c = conn_;
  conn_ = nullptr;
  if (reuse) {
    uint64_t max_idle = rt_->keepalive > 0 ? rt_->keepalive : m_.maxIdle();
    if (lua_choice_.peer && lua_choice_.keepalive) {
      c->release(lua_choice_.keepalive_timeout_ms, max_idle, lua_choice_.keepalive_requests);
    } else {
      c->release(rt_->keepalive_timeout_ms, max_idle, rt_->keepalive_requests);
    }
  } else {
    c->close();
  }
  endTry(upstream::Outcome::kOk);
  state_ = State::kDone;
  sink_.finish(http::ContentResult{}, lua_);
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
    breakResponse(status == UV_EOF ? std::string("upstream prematurely closed connection while reading upstream")
                                   : std::string("recv() failed (") + std::to_string(-status) + ": " +
                                         strerror(-status) + ") while reading upstream");
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
  std::string why = status == UV_EOF ? std::string("upstream prematurely closed connection")
                                     : std::string("recv() failed (") + std::to_string(-status) + ": " +
                                           strerror(-status) + ")";
  fail(conf::kNextError, 502, why + " while reading response header from upstream");
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
    case State::kConnecting: return "connecting to upstream";
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
  t.response_us = nowUs() - try_start_us_;
  dropConnection();
  // Passive health: errors, timeouts and bad heads always count; statuses
  // only when proxy_next_upstream names them (as nginx's max_fails).
  bool counts = condition != conf::kNextHttp403 && condition != conf::kNextHttp404;
  endTry(counts ? upstream::Outcome::kFailed : upstream::Outcome::kOk);
  last_state_ = counts ? "failed" : "next";  // nginx's NGX_PEER_FAILED / NGX_PEER_NEXT
  last_status_ = t.status;
  if (counts && !lua_choice_.peer && rt_->reportFailure(peer_, uv_now(m_.loop()))) {
    logError(LogLevel::kWarn, "upstream server temporarily disabled");
  }
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
  TG_LOG_CONN(LogLevel::kInfo, r_.conn->id, "client prematurely closed connection while %s%s", activity(),
              http::describeRequest(r_).c_str());
  dropConnection();
  if (have_peer_) endTry(upstream::Outcome::kOk);
  state_ = State::kDone;
  http::ContentResult res;
  res.aborted = true;
  res.status = 499;
  sink_.finish(std::move(res), lua_);
}

void ProxyTask::endTry(upstream::Outcome outcome) {
  if (!have_peer_) return;
  have_peer_ = false;
  rt_->balancer->onFinish(peer_, nowUs() - try_start_us_, outcome, nowUs());
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
    line.append(", upstream: \"http://").append(r_.upstream.tries.back().addr).append("\"");
  }
  TG_LOG_CONN(level, r_.conn->id, "%s", line.c_str());
}

}  // namespace

ProxyModule::ProxyModule(uv_loop_t* loop, const conf::Config& cfg)
    : loop_(loop), pool_(loop), upstreams_(cfg), max_idle_(static_cast<uint64_t>(cfg.worker_connections)) {}

ProxyModule::~ProxyModule() = default;

std::unique_ptr<http::ContentTask> ProxyModule::start(http::Request& r, http::ContentSink& sink,
                                                      http::ContentTask* lua) {
  auto task = std::make_unique<ProxyTask>(*this, r, sink, lua);
  ProxyTask* raw = task.get();
  raw->run();
  return task;
}

void ProxyModule::shutdown() { pool_.shutdown(); }

}  // namespace tidegate::proxy
