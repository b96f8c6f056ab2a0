#include "proxy/upstream_conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <charconv>
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
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out->sa);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &in6->sin6_addr) != 1) return false;
    out->len = sizeof(sockaddr_in6);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&out->sa);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) != 1) return false;
    out->len = sizeof(sockaddr_in);
  }
  out->text = text;
  return true;
}

// --- UpstreamConn -------------------------------------------------------------

UpstreamConn::UpstreamConn(ConnPool* pool, std::string key) : pool_(pool), key_(std::move(key)) {
  uv_tcp_init(pool->loop(), &tcp_);
  uv_timer_init(pool->loop(), &timer_);
  tcp_.data = timer_.data = connect_req_.data = write_req_.data = this;
  open_handles_ = 2;
}

UpstreamConn* UpstreamConn::create(ConnPool* pool, const PeerAddress& peer) {
  return new UpstreamConn(pool, peer.text);
}

bool UpstreamConn::connect(User* user, const PeerAddress& peer, int* status) {
  user_ = user;
  int rc = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&peer.sa), onConnect);
  if (rc != 0) {
    *status = rc;
    return false;
  }
  return true;
}

void UpstreamConn::attach(User* user) {
  pool_->remove(this);
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
  int rc = uv_write(&write_req_, stream(), bufs, n, onWrite);
  if (rc != 0) {
    // Reported from the loop like any write error (the user may be on the
    // stack of a call that expects no re-entry).
    write_failed_ = rc;
    setTimer(0);
  }
}

bool UpstreamConn::writeNow(const uv_buf_t* bufs, unsigned n, int* error) {
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
  if (!c->user_) {
    // Idle in the pool: the peer closed it or sent something unasked.
    c->close();
    return;
  }
  if (nread < 0) {
    c->stopReading();
    c->user_->onReadEnd(static_cast<int>(nread));
    return;
  }
  c->user_->onData(buf->base, static_cast<size_t>(nread));
}

void UpstreamConn::setTimer(uint64_t ms) { uv_timer_start(&timer_, onTimer, ms, 0); }

void UpstreamConn::stopTimer() { uv_timer_stop(&timer_); }

void UpstreamConn::onTimer(uv_timer_t* t) noexcept {
  auto* c = static_cast<UpstreamConn*>(t->data);
  if (c->closing_) return;
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

void UpstreamConn::release(uint64_t idle_timeout_ms, uint64_t max_idle, uint64_t max_requests) {
  user_ = nullptr;
  stopTimer();
  if (closing_ || pool_->shut_ || requests_ >= max_requests || idle_timeout_ms == 0) {
    close();
    return;
  }
  pool_->put(this, max_idle);
  if (closing_) return;
  setTimer(idle_timeout_ms);
  startReading();
}

void UpstreamConn::close() {
  if (closing_) return;
  closing_ = true;
  if (!user_) pool_->remove(this);
  user_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
}

void UpstreamConn::onClose(uv_handle_t* h) noexcept {
  auto* c = static_cast<UpstreamConn*>(h->data);
  if (--c->open_handles_ == 0) delete c;
}

// --- ConnPool -----------------------------------------------------------------

ConnPool::ConnPool(uv_loop_t* loop) : loop_(loop), read_buf_(static_cast<char*>(std::malloc(kReadBufferSize))) {}

ConnPool::~ConnPool() {
  shutdown();
  std::free(read_buf_);
}

UpstreamConn* ConnPool::take(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end() || !it->second.head) return nullptr;
  return it->second.head;
}

size_t ConnPool::idleCount(const std::string& key) const {
  auto it = idle_.find(key);
  return it == idle_.end() ? 0 : it->second.count;
}

void ConnPool::put(UpstreamConn* c, uint64_t max_idle) {
  List& l = idle_[c->key_];
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
}

void ConnPool::remove(UpstreamConn* c) {
  if (!c->in_pool_) return;
  c->in_pool_ = false;
  List& l = idle_[c->key_];
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
