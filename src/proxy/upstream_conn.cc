#include "proxy/upstream_conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace tidegate::proxy {

bool parsePeerAddress(const std::string& text, PeerAddress* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 >= text.size()) return false;
  unsigned port = 0;
  auto [end, ec] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port == 0 || port > 65535) return false;
  std::string host = text.substr(0, colon);
  out->sa = {};
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    sockaddr_in6* in6 = &out->sa.in6;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &in6->sin6_addr) != 1) return false;
    out->len = sizeof(sockaddr_in6);
  } else {
    sockaddr_in* in = &out->sa.in;
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) != 1) return false;
    out->len = sizeof(sockaddr_in);
  }
  out->text = text;
  return true;
}

// --- UpstreamConn -------------------------------------------------------------

UpstreamConn::UpstreamConn(ConnPool* pool, std::string key)
    : pool_(pool), idle_list_(&pool->peer(key)), key_(std::move(key)) {
  idle_list_->open++;
  uv_tcp_init(pool->loop(), &tcp_);
  uv_timer_init(pool->loop(), timer_.handle());
  tcp_.data = timer_.handle()->data = connect_req_.data = write_req_.data = this;
  open_handles_ = 2;
}

UpstreamConn* UpstreamConn::create(ConnPool* pool, std::string key, int64_t now_us) {
  auto* c = new UpstreamConn(pool, std::move(key));
  c->idle_list_->last_move_us = now_us;
  return c;
}

bool UpstreamConn::connect(User* user, const PeerAddress& peer, int* status) {
  user_ = user;
  int rc = uv_tcp_connect(&connect_req_, &tcp_, &peer.sa.any, onConnect);
  if (rc != 0) {
    *status = rc;
    return false;
  }
  return true;
}

void UpstreamConn::attach(User* user, int64_t now_us) {
  pool_->remove(this);
  idle_list_->last_move_us = now_us;
  user_ = user;
  stopTimer();
  // Reading goes on: stopping and restarting it would cost two epoll_ctl
  // calls per reused connection.
}

void UpstreamConn::onConnect(uv_connect_t* req, int status) noexcept {
  auto* c = static_cast<UpstreamConn*>(req->data);
  if (c->closing_ || !c->user_) return;
  // Requests are small and latency matters: no Nagle delay on the head
  // that follows a body piece.
  if (status == 0) uv_tcp_nodelay(&c->tcp_, 1);
  c->user_->onConnected(status);
}

void UpstreamConn::write(const uv_buf_t* bufs, unsigned n) {
  int rc = 0;
  if (tls_) {
    for (unsigned i = 0; i < n && rc == 0; i++) {
      if (!tls_->encrypt(bufs[i].base, bufs[i].len)) rc = UV_EPROTO;
    }
    tls_out_ = tls_->takeOutput();
    uv_buf_t buf = uv_buf_init(tls_out_.data(), static_cast<unsigned>(tls_out_.size()));
    if (rc == 0) rc = uv_write(&write_req_, stream(), &buf, 1, onWrite);
  } else {
    rc = uv_write(&write_req_, stream(), bufs, n, onWrite);
  }
  if (rc != 0) {
    // Reported from the loop like any write error (the user may be on the
    // stack of a call that expects no re-entry).
    write_failed_ = rc;
    setTimer(0);
  }
}

bool UpstreamConn::writeNow(const uv_buf_t* bufs, unsigned n, int* error) {
  if (tls_) {
    for (unsigned i = 0; i < n; i++) {
      if (!tls_->encrypt(bufs[i].base, bufs[i].len)) {
        *error = UV_EPROTO;
        return false;
      }
    }
    tls_out_ = tls_->takeOutput();
    return writeCipher(error);
  }
  int rc = uv_try_write(stream(), bufs, n);
  if (rc == UV_EAGAIN) rc = 0;
  if (rc < 0) {
    *error = rc;
    return false;
  }
  auto done = static_cast<size_t>(rc);
  uv_buf_t rest[4];
  unsigned m = 0;
  for (unsigned i = 0; i < n; i++) {
    if (done >= bufs[i].len) {
      done -= bufs[i].len;
      continue;
    }
    rest[m++] = uv_buf_init(bufs[i].base + done, static_cast<unsigned>(bufs[i].len - done));
    done = 0;
  }
  if (m == 0) return true;
  write(rest, m);  // libuv copies the buffer list
  return false;
}

bool UpstreamConn::writeCipher(int* error) {
  uv_buf_t buf = uv_buf_init(tls_out_.data(), static_cast<unsigned>(tls_out_.size()));
  int rc = uv_try_write(stream(), &buf, 1);
  if (rc == UV_EAGAIN) rc = 0;
  if (rc < 0) {
    *error = rc;
    return false;
  }
  if (static_cast<size_t>(rc) == tls_out_.size()) return true;
  tls_out_.erase(0, static_cast<size_t>(rc));
  buf = uv_buf_init(tls_out_.data(), static_cast<unsigned>(tls_out_.size()));
  int wrc = uv_write(&write_req_, stream(), &buf, 1, onWrite);
  if (wrc != 0) {
    write_failed_ = wrc;
    setTimer(0);
  }
  return false;
}

// --- TLS ----------------------------------------------------------------------

namespace {

// Ciphertext TLS produced on its own, on its way to the socket.
struct TlsWrite {
  uv_write_t req;
  std::string data;
};

}  // namespace

bool UpstreamConn::startTls(std::unique_ptr<tls::TlsClient> tls) {
  tls_ = std::move(tls);
  if (tls_->handshake() == tls::TlsClient::Step::kError) {
    tls_error_ = "SSL_do_handshake() failed (SSL: " + tls_->lastError() + ")";
    return false;
  }
  flushTls();
  startReading();
  return true;
}

void UpstreamConn::flushTls() {
  if (!tls_->hasOutput()) return;
  auto* w = new TlsWrite;
  w->data = tls_->takeOutput();
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  // A failed write shows as a failed read soon after.
  if (uv_write(&w->req, stream(), &buf, 1, onTlsWrite) != 0) delete w;
}

void UpstreamConn::onTlsWrite(uv_write_t* req, int) noexcept { delete static_cast<TlsWrite*>(req->data); }

void UpstreamConn::handshakeStep() {
  tls::TlsClient::Step step = tls_->handshake();
  flushTls();
  if (step == tls::TlsClient::Step::kWant) return;
  if (step == tls::TlsClient::Step::kError) {
    tls_error_ = "SSL_do_handshake() failed (SSL: " + tls_->lastError() + ")";
    user_->onHandshake(false);
    return;
  }
  // Records that came with the last flight (a TLS 1.3 ticket).
  plain_.clear();
  if (tls_->feed(nullptr, 0, &plain_) != tls::TlsClient::Input::kOk || !plain_.empty()) {
    tls_error_ = "upstream sent unexpected data in SSL handshake";
    user_->onHandshake(false);
    return;
  }
  user_->onHandshake(true);
}

void UpstreamConn::readTls(const char* data, size_t len) {
  if (!tls_->handshaked()) {
    tls_->feed(data, len, nullptr);
    handshakeStep();
    return;
  }
  plain_.clear();
  tls::TlsClient::Input in = tls_->feed(data, len, &plain_);
  flushTls();
  if (!user_) {
    // Idle in the pool: only records without data (a ticket) may come.
    if (in != tls::TlsClient::Input::kOk || !plain_.empty()) close();
    return;
  }
  if (!plain_.empty()) user_->onData(plain_.data(), plain_.size());
  if (closing_ || !user_ || in == tls::TlsClient::Input::kOk) return;
  if (in == tls::TlsClient::Input::kError) tls_error_ = "SSL_read() failed (SSL: " + tls_->lastError() + ")";
  stopReading();
  user_->onReadEnd(in == tls::TlsClient::Input::kClosed ? UV_EOF : UV_EPROTO);
}

void UpstreamConn::onWrite(uv_write_t* req, int status) noexcept {
  auto* c = static_cast<UpstreamConn*>(req->data);
  if (c->closing_ || !c->user_) return;
  c->user_->onWritten(status);
}

bool UpstreamConn::peerOpen() {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0) return false;
  char c;
  ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void UpstreamConn::startReading() {
  if (reading_ || closing_) return;
  reading_ = true;
  uv_read_start(stream(), onAlloc, onRead);
}

void UpstreamConn::stopReading() {
  if (!reading_) return;
  reading_ = false;
  uv_read_stop(stream());
}

void UpstreamConn::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<UpstreamConn*>(h->data);
  buf->base = c->pool_->readBuffer();
  buf->len = ConnPool::kReadBufferSize;
}

void UpstreamConn::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* c = static_cast<UpstreamConn*>(s->data);
  if (c->closing_ || nread == 0) return;
  if (nread > 0 && c->tls_) {
    c->readTls(buf->base, static_cast<size_t>(nread));
    return;
  }
  if (!c->user_) {
    // Idle in the pool: the peer closed it or sent something unasked.
    c->close();
    return;
  }
  if (nread < 0) {
    c->stopReading();
    if (c->tls_ && !c->tls_->handshaked()) {
      c->tls_error_ = "peer closed connection in SSL handshake";
      c->user_->onHandshake(false);
      return;
    }
    c->user_->onReadEnd(static_cast<int>(nread));
    return;
  }
  ConnPool* pool = c->pool_;  // the user may free c
  c->user_->onData(buf->base, static_cast<size_t>(nread));
  if (pool->after_read_) pool->after_read_();
}

void UpstreamConn::onTimer(uv_timer_t* t) noexcept {
  auto* c = static_cast<UpstreamConn*>(t->data);
  if (c->closing_ || !c->timer_.expired(onTimer)) return;
  if (!c->user_) {
    c->close();  // keepalive_timeout of an idle connection
    return;
  }
  if (c->write_failed_ != 0) {
    int rc = c->write_failed_;
    c->write_failed_ = 0;
    c->user_->onWritten(rc);
    return;
  }
  c->user_->onTimeout();
}

void UpstreamConn::release(uint64_t idle_timeout_ms, uint64_t max_idle, uint64_t max_requests, int64_t now_us) {
  user_ = nullptr;
  stopTimer();
  if (closing_ || pool_->shut_ || requests_ >= max_requests || idle_timeout_ms == 0) {
    close();
    return;
  }
  // An idle connection keeps no buffer (TLS may have grown these; a plain
  // connection never touches them, nor their cache line, here).
  if (tls_) {
    std::string().swap(plain_);
    std::string().swap(tls_out_);
  }
  pool_->put(this, max_idle, now_us);
  if (closing_) return;
  setTimer(idle_timeout_ms);
  startReading();
}

void UpstreamConn::close() {
  if (closing_) return;
  closing_ = true;
  if (!user_) pool_->remove(this);
  user_ = nullptr;
  idle_list_->open--;
  if (idle_list_->waiting > 0) pool_->kick(*idle_list_);  // one fewer open: a waiter may open one
  if (tls_ && tls_->handshaked()) {
    // close_notify, best effort: only if the socket takes it now.
    std::string alert = tls_->shutdown();
    uv_buf_t buf = uv_buf_init(alert.data(), static_cast<unsigned>(alert.size()));
    if (!alert.empty()) uv_try_write(stream(), &buf, 1);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_.handle()), onClose);
}

void UpstreamConn::onClose(uv_handle_t* h) noexcept {
  auto* c = static_cast<UpstreamConn*>(h->data);
  if (--c->open_handles_ == 0) delete c;
}

// --- ConnPool -----------------------------------------------------------------

ConnPool::ConnPool(uv_loop_t* loop) : loop_(loop), read_buf_(static_cast<char*>(std::malloc(kReadBufferSize))) {}

ConnPool::~ConnPool() {
  shutdown();
  // Tasks cancel their waits as they go, before the pool does.
  if (serve_idle_) uv_close(reinterpret_cast<uv_handle_t*>(serve_idle_), [](uv_handle_t* h) {
    delete reinterpret_cast<uv_idle_t*>(h);
  });
  if (wait_timer_) uv_close(reinterpret_cast<uv_handle_t*>(wait_timer_), [](uv_handle_t* h) {
    delete reinterpret_cast<uv_timer_t*>(h);
  });
  for (auto& [key, box] : sessions_) box->release();
  std::free(read_buf_);
}

const tls::TlsSessionBox* ConnPool::session(const std::string& key) const {
  auto it = sessions_.find(key);
  return it == sessions_.end() ? nullptr : it->second;
}

void ConnPool::keepSession(const std::string& key, tls::TlsSessionBox* box) {
  tls::TlsSessionBox*& slot = sessions_[key];
  box->retain();
  if (slot) slot->release();
  slot = box;
}

size_t ConnPool::idleCount(const std::string& key) const {
  auto it = idle_.find(key);
  return it == idle_.end() ? 0 : it->second.count;
}

void ConnPool::put(UpstreamConn* c, uint64_t max_idle, int64_t now_us) {
  IdleList& l = *c->idle_list_;
  l.last_move_us = now_us;
  c->idle_prev_ = nullptr;
  c->idle_next_ = l.head;
  if (l.head) l.head->idle_prev_ = c;
  l.head = c;
  if (!l.tail) l.tail = c;
  l.count++;
  idle_total_++;
  c->in_pool_ = true;
  // Over the cap: the least recently used goes.
  if (max_idle > 0 && l.count > max_idle) l.tail->close();
  if (l.waiting > 0) kick(l);
}

bool ConnPool::wait(IdleList& l, ConnPoolWaiter* w, const PoolLimits& limits, int64_t now_us) {
  l.limits = limits;
  if (limits.conns == 0 || limits.wait_ms == 0 || shut_) return false;
  auto wait_us = static_cast<int64_t>(limits.wait_ms) * 1000;
  if (l.waiting == 0) {
    if (l.open < limits.conns) return false;
    // None changed hands for as long as a try may wait: all are held by
    // slow exchanges (long polls, big downloads), a wait would most likely
    // be in vain.
    if (now_us - l.last_move_us > wait_us) return false;
  }
  w->wait_list_ = &l;
  w->wait_until_us_ = now_us + wait_us;
  w->wait_next_ = nullptr;
  w->wait_prev_ = l.wait_tail;
  if (l.wait_tail) l.wait_tail->wait_next_ = w;
  else l.wait_head = w;
  l.wait_tail = w;
  l.waiting++;
  if (!l.in_service) {
    l.in_service = true;
    serving_.push_back(&l);
  }
  if (!wait_timer_) {
    wait_timer_ = new uv_timer_t;
    uv_timer_init(loop_, wait_timer_);
    uv_unref(reinterpret_cast<uv_handle_t*>(wait_timer_));
    wait_timer_->data = this;
  }
  // (Armed for the first waiter; a key with a shorter wait may come later.)
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(wait_timer_)) || uv_timer_get_due_in(wait_timer_) > limits.wait_ms) {
    uv_timer_start(wait_timer_, onWaitTimer, limits.wait_ms, 0);
  }
  return true;
}

void ConnPool::cancelWait(ConnPoolWaiter* w) {
  IdleList* l = w->wait_list_;
  if (!l) return;
  if (w->wait_prev_) w->wait_prev_->wait_next_ = w->wait_next_;
  else l->wait_head = w->wait_next_;
  if (w->wait_next_) w->wait_next_->wait_prev_ = w->wait_prev_;
  else l->wait_tail = w->wait_prev_;
  w->wait_next_ = w->wait_prev_ = nullptr;
  w->wait_list_ = nullptr;
  l->waiting--;
}

void ConnPool::kick(IdleList& l) {
  if (!l.wait_head) return;
  if (!serve_idle_) {
    serve_idle_ = new uv_idle_t;
    uv_idle_init(loop_, serve_idle_);
    uv_unref(reinterpret_cast<uv_handle_t*>(serve_idle_));
    serve_idle_->data = this;
  }
  uv_idle_start(serve_idle_, onServe);  // (no-op when started)
}

void ConnPool::onServe(uv_idle_t* h) noexcept {
  auto* pool = static_cast<ConnPool*>(h->data);
  uv_idle_stop(h);
  pool->serve();
}

void ConnPool::onWaitTimer(uv_timer_t* t) noexcept { static_cast<ConnPool*>(t->data)->serve(); }

void ConnPool::serve() {
  int64_t now = nowUs();
  // A turn may end its request, start another try (which may wait again,
  // on any key) or close connections (which kicks): the list is re-read.
  for (size_t i = 0; i < serving_.size();) {
    IdleList& l = *serving_[i];
    while (l.wait_head && (l.head || l.open < l.limits.conns || l.wait_head->wait_until_us_ <= now)) {
      ConnPoolWaiter* w = l.wait_head;
      cancelWait(w);
      w->onPoolTurn(l);
    }
    if (l.wait_head) {
      i++;
      continue;
    }
    l.in_service = false;
    serving_[i] = serving_.back();
    serving_.pop_back();
  }
  armWaitTimer();
  if (after_read_) after_read_();  // a request that ended in a turn is freed now
}

void ConnPool::armWaitTimer() {
  if (!wait_timer_) return;
  if (serving_.empty()) {
    uv_timer_stop(wait_timer_);
    return;
  }
  int64_t first = INT64_MAX;
  for (IdleList* l : serving_) first = std::min(first, l->wait_head->wait_until_us_);
  int64_t now = nowUs();
  uint64_t ms = first <= now ? 0 : static_cast<uint64_t>((first - now + 999) / 1000);
  uv_timer_start(wait_timer_, onWaitTimer, ms, 0);
}

void ConnPool::remove(UpstreamConn* c) {
  if (!c->in_pool_) return;
  c->in_pool_ = false;
  IdleList& l = *c->idle_list_;  // set when it was put in
  if (c->idle_prev_) c->idle_prev_->idle_next_ = c->idle_next_;
  else l.head = c->idle_next_;
  if (c->idle_next_) c->idle_next_->idle_prev_ = c->idle_prev_;
  else l.tail = c->idle_prev_;
  c->idle_next_ = c->idle_prev_ = nullptr;
  l.count--;
  idle_total_--;
}

void ConnPool::shutdown() {
  shut_ = true;
  for (auto& [key, list] : idle_) {
    while (list.head) list.head->close();
  }
}

}  // namespace tidegate::proxy
