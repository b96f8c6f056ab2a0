#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "http/ascii.h"
#include "proxy/proxy_task.h"

namespace tidegate::proxy {
namespace {

using http::iequals;

// A request body kept in a file goes upstream in pieces of this size.
constexpr size_t kFileChunk = 64 * 1024;

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

}  // namespace

using core::LogLevel;

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
  std::string& chunk = rare().body_chunk;
  chunk.resize(std::min<uint64_t>(left, kFileChunk));
  ssize_t n = ::pread(body_fd_, chunk.data(), chunk.size(), static_cast<off_t>(body_offset_));
  if (n <= 0) {
    logError(LogLevel::kCrit, std::string("pread() \"") + r_.body.path() + "\" failed");
    dropConnection();
    endTry(upstream::Outcome::kOk);
    respondError(500);
    return;
  }
  body_offset_ += static_cast<uint64_t>(n);
  bufs_[0] = uv_buf_init(chunk.data(), static_cast<unsigned>(n));
  conn_->setTimer(send_timeout_ms_);  // first: a write that fails at once resets it
  conn_->write(bufs_, 1);
}

void ProxyTask::pumpBody() {
  Rare& rare = this->rare();
  std::string& piece = rare.stream_piece;
  bool last = sink_.takeRequestBody(&piece);
  if (piece.empty() && !last) {
    conn_->stopTimer();  // waiting for the client (client_body_timeout watches it)
    return;
  }
  if (!piece.empty()) body_streamed_ = true;
  unsigned n = 0;
  bool chunked = req_.body_length < 0;
  if (chunked && !piece.empty()) {
    char hex[24];
    int len = snprintf(hex, sizeof(hex), "%zx\r\n", piece.size());
    rare.chunk_head.assign(hex, static_cast<size_t>(len));
    piece.append("\r\n");
    bufs_[n++] = uv_buf_init(rare.chunk_head.data(), static_cast<unsigned>(rare.chunk_head.size()));
  }
  if (chunked && last) piece.append("0\r\n\r\n");
  bufs_[n++] = uv_buf_init(piece.data(), static_cast<unsigned>(piece.size()));
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
    if (cond != conf::kNextHttp403 && cond != conf::kNextHttp404) reportFailure("status " + std::to_string(h.status));
  }
  if (!request_done_) {
    // An early answer: the rest of the body is not sent, and the
    // connection cannot be reused.
    req_.keepalive = false;
  }
  if (h.upgrade) {
    r_.upstream.setHeaders(h.headers);
    startTunnel();
    return;
  }
  state_ = State::kStreaming;
  if (*s_.intercept_errors && h.status >= 300 && h.status != 304) {
    // No error_page yet: our own page for that status replaces the upstream's.
    req_.keepalive = false;
    dropConnection();
    endTry(upstream::Outcome::kOk);
    respondError(h.status);
    return;
  }
  // The fields go to the client as views into the parser's strings, which
  // then become the request's ($upstream_http_*) without a copy (the
  // views stay valid: the strings do not move).
  http::HeaderViews& fields = m_.responseViews();
  fields.clear();
  const std::vector<std::string>& hide = *s_.hide_headers;
  const std::vector<std::string>& pass = *s_.pass_headers;
  for (const auto& [name, value] : h.headers) {
    if (listed(hide, name)) continue;
    if (hiddenByDefault(name) && !listed(pass, name)) continue;
    fields.emplace_back(name, value);
  }
  http::ContentResult res;
  res.status = h.status;
  res.header_views = &fields;
  r_.upstream.exchangeHeaders([this](auto& record_fields, size_t& bytes) { parser_.swapHeaders(record_fields, bytes); });
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
  std::string& buf = rare().tunnel_buf;
  buf.assign(data, len);
  bufs_[0] = uv_buf_init(buf.data(), static_cast<unsigned>(buf.size()));
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
  int64_t now = nowUs();
  t.response_us = now - try_start_us_;
  const ResponseHead& h = parser_.head();
  bool reuse = req_.keepalive && h.keep_alive && request_done_ && !parser_.bodyUntilClose();
  UpstreamConn* c = conn_;
  conn_ = nullptr;
  if (reuse) {
    uint64_t max_idle = rt_->keepalive > 0 ? rt_->keepalive : m_.maxIdle();
    if (lua_choice_.peer && lua_choice_.keepalive) {
      c->release(lua_choice_.keepalive_timeout_ms, max_idle, lua_choice_.keepalive_requests, now);
    } else {
      c->release(rt_->keepalive_timeout_ms, max_idle, rt_->keepalive_requests, now);
    }
  } else {
    c->close();
  }
  endTry(upstream::Outcome::kOk, now);
  state_ = State::kDone;
  sink_.finish(http::ContentResult{}, lua_);
}

}  // namespace tidegate::proxy
