#include "http/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <cstdlib>

#include "core/clock.h"
#include "core/log.h"
#include "http/connection.h"

namespace tidegate::http {
namespace {

using core::LogLevel;

// nginx's client_header_buffer_size default: most heads fit in 1 KB.
constexpr size_t kInitialBuffer = 1024;
constexpr size_t kMaxPooledBuffers = 1024;

}  // namespace

HttpServer::HttpServer(uv_loop_t* loop, conf::ConfigPtr cfg) : loop_(loop), cfg_(std::move(cfg)) {}

HttpServer::~HttpServer() {
  if (proxy_handler_) proxy_handler_->setReaper(nullptr);  // it may outlive us
  for (char* b : buffer_pool_) free(b);
}

bool HttpServer::start(const std::vector<int>& fds, std::string* err) {
  if (!access_log_.open(*cfg_, err)) return false;
  uv_timer_init(loop_, &retry_timer_);
  retry_timer_.data = this;
  retry_timer_open_ = true;
  uv_check_init(loop_, &reaper_);
  reaper_.data = this;
  reaper_open_ = true;
  for (const auto& g : cfg_->listen_groups) {
    if (!g.listen.ssl) continue;
    auto ctx = tls::ServerContext::create(g, err);
    if (!ctx) return false;
    ctx->setCertificateSource(cert_source_);
    ctx->setCertificateScript(this);
    tls_[&g] = std::move(ctx);
  }
  for (size_t i = 0; i < cfg_->listen_groups.size() && i < fds.size(); i++) {
    if (fds[i] < 0) continue;  // served through a wildcard socket, below
    auto* l = new Listener;
    l->server = this;
    l->group = &cfg_->listen_groups[i];
    l->fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);  // ours to close, whatever the caller does with its copy
    if (l->fd < 0 || uv_poll_init_socket(loop_, &l->poll, l->fd) != 0) {
      *err = "cannot watch the listening socket for " + l->group->listen.key();
      if (l->fd >= 0) ::close(l->fd);
      delete l;
      return false;
    }
    l->poll.data = l;
    for (const auto& g : cfg_->listen_groups) {
      if (g.via != static_cast<int>(i)) continue;
      unsigned char bin[sizeof(in6_addr)];
      int family = g.listen.ipv6() ? AF_INET6 : AF_INET;
      if (inet_pton(family, g.listen.host.c_str(), bin) == 1) {
        size_t n = family == AF_INET6 ? sizeof(in6_addr) : sizeof(in_addr);
        l->by_address.emplace_back(std::string(reinterpret_cast<char*>(bin), n), &g);
      }
    }
    uv_poll_start(&l->poll, UV_READABLE, onReadable);
    listeners_.push_back(l);
  }
  return true;
}

void HttpServer::setCertificateSource(tls::CertificateSource* src) {
  cert_source_ = src;
  for (auto& [group, ctx] : tls_) ctx->setCertificateSource(src);
}

tls::CertificateScript::Outcome HttpServer::runCertificateScript(SSL* ssl, void* owner, const conf::LuaCode& code,
                                                                 uint64_t budget_ms) {
  return static_cast<Connection*>(owner)->runCertificateLua(ssl, code, budget_ms);
}

tls::ServerContext* HttpServer::tlsContext(const conf::Config::ListenGroup* group) const {
  auto it = tls_.find(group);
  return it == tls_.end() ? nullptr : it->second.get();
}

const conf::Config::ListenGroup* HttpServer::groupFor(const Listener* l, int fd) const {
  if (l->by_address.empty()) return l->group;
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return l->group;
  std::string bin;
  if (ss.ss_family == AF_INET) {
    bin.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr), sizeof(in_addr));
  } else {
    bin.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr), sizeof(in6_addr));
  }
  for (const auto& [addr, g] : l->by_address) {
    if (addr == bin) return g;
  }
  return l->group;
}

void HttpServer::onReadable(uv_poll_t* p, int status, int) noexcept {
  auto* l = static_cast<Listener*>(p->data);
  if (status < 0) return;
  l->server->acceptAll(l);
}

// `fmt` takes the int `arg` (an errno, printed with its text when
// `with_errno`) and then the count of occurrences since the last report.
void HttpServer::logRateLimited(uint64_t* last_ms, uint64_t* count, const char* fmt, int arg, bool with_errno) {
  (*count)++;
  uint64_t now = core::wallMs();
  if (now - *last_ms < 1000) return;
  if (with_errno) TG_LOG(LogLevel::kAlert, fmt, arg, strerror(arg), static_cast<unsigned long long>(*count));
  else TG_LOG(LogLevel::kAlert, fmt, arg, static_cast<unsigned long long>(*count));
  *last_ms = now;
  *count = 0;
}

void HttpServer::acceptAll(Listener* l) {
  // A bounded batch per wakeup keeps one busy listener from starving the loop.
  for (int i = 0; i < 64 && !paused_; i++) {
    if (connections_ >= static_cast<size_t>(cfg_->worker_connections)) {
      logRateLimited(&last_overflow_log_ms_, &overflows_,
                     "%d worker_connections are not enough, not accepting until one closes (%llu times since the last report)",
                     cfg_->worker_connections, false);
      pauseAccepting(false);
      return;
    }
    int fd = accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK || e == ECONNABORTED || e == EINTR || e == EPROTO) {
        if (e == EAGAIN || e == EWOULDBLOCK) return;
        continue;
      }
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: a normal state under load. Leave the
      // connections queued and try again shortly.
      logRateLimited(&last_accept_log_ms_, &accept_errors_,
                     "accept() failed (%d: %s), retrying in 100 ms (%llu times since the last report)", e, true);
      pauseAccepting(true);
      return;
    }
    Connection::start(this, fd, groupFor(l, fd));
  }
}

void HttpServer::pauseAccepting(bool retry_later) {
  if (!paused_) {
    paused_ = true;
    for (Listener* l : listeners_) uv_poll_stop(&l->poll);
  }
  // When fds run out, nothing tells us they are back: poll with a timer.
  if (retry_later && retry_timer_open_) uv_timer_start(&retry_timer_, onRetryTimer, 100, 0);
}

void HttpServer::onRetryTimer(uv_timer_t* t) noexcept { static_cast<HttpServer*>(t->data)->resumeAccepting(); }

void HttpServer::resumeAccepting() {
  if (!paused_ || draining_) return;
  paused_ = false;
  for (Listener* l : listeners_) {
    uv_poll_start(&l->poll, UV_READABLE, onReadable);
    acceptAll(l);
  }
}

void HttpServer::retire(std::unique_ptr<ContentTask> task) {
  if (!task) return;
  graveyard_.push_back(std::move(task));
  if (reaper_open_) uv_check_start(&reaper_, onReap);
}

void HttpServer::releaseLog(ContentTask* task) {
  auto it = std::find_if(logs_.begin(), logs_.end(), [task](const auto& t) { return t.get() == task; });
  if (it == logs_.end()) return;
  auto owned = std::move(*it);
  logs_.erase(it);
  retire(std::move(owned));
  maybeDone();  // a graceful stop waits for them
}

void HttpServer::onReap(uv_check_t* c) noexcept {
  auto* self = static_cast<HttpServer*>(c->data);
  uv_check_stop(c);
  self->reapNow();
}

void HttpServer::reapNow() {
  // Destructors may close handles (timers): fine here, outside any callback
  // of theirs. They may retire more tasks, into graveyard_ (the reaper runs
  // again); the two vectors keep their storage from turn to turn. A
  // destructor that led here again finds reaping_ in use and leaves it.
  if (graveyard_.empty() || !reaping_.empty()) return;
  reaping_.swap(graveyard_);
  reaping_.clear();
}

void HttpServer::onListenerClosed(uv_handle_t* h) noexcept {
  auto* l = static_cast<Listener*>(h->data);
  ::close(l->fd);
  delete l;
}

void HttpServer::shutdown(bool graceful, std::function<void()> done) {
  draining_ = true;
  done_ = std::move(done);
  // Idle upstream connections close now; busy ones close when their request ends.
  if (proxy_handler_) proxy_handler_->shutdown();
  for (Listener* l : listeners_) uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), onListenerClosed);
  listeners_.clear();
  if (retry_timer_open_) {
    retry_timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&retry_timer_), nullptr);
  }
  // close() unlinks, so walk a snapshot.
  std::vector<Connection*> all;
  for (Connection* c = head_; c; c = c->next) all.push_back(c);
  for (Connection* c : all) {
    if (graceful) c->closeIfIdle();
    else c->closeNow();
  }
  if (!graceful) logs_.clear();  // what they wait for is cancelled
  maybeDone();
}

void HttpServer::maybeDone() {
  if (draining_ && connections_ == 0 && logs_.empty() && done_) {
    if (reaper_open_) {
      // The last retired tasks go in the close callback, after this turn's callbacks.
      reaper_open_ = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&reaper_), [](uv_handle_t* h) {
        auto* self = static_cast<HttpServer*>(h->data);
        auto dead = std::move(self->graveyard_);
        self->graveyard_.clear();
      });
    }
    auto done = std::move(done_);
    done_ = nullptr;
    done();
  }
}

bool HttpServer::reopenLogs(std::string* err) { return access_log_.reopen(err); }

void HttpServer::link(Connection* c) {
  c->next = head_;
  c->prev = nullptr;
  if (head_) head_->prev = c;
  head_ = c;
  connections_++;
}

void HttpServer::unlink(Connection* c) {
  if (c->prev) c->prev->next = c->next;
  else head_ = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = nullptr;
  connections_--;
  // A slot came free: accept again if we had stopped because of worker_connections.
  if (paused_ && !draining_ && connections_ < static_cast<size_t>(cfg_->worker_connections)) resumeAccepting();
  maybeDone();
}

uint64_t HttpServer::nextConnectionId() { return ++next_id_; }

char* HttpServer::takeBuffer(size_t* cap) {
  *cap = kInitialBuffer;
  if (!buffer_pool_.empty()) {
    char* b = buffer_pool_.back();
    buffer_pool_.pop_back();
    return b;
  }
  return static_cast<char*>(malloc(kInitialBuffer));
}

void HttpServer::giveBuffer(char* buf, size_t cap) {
  if (cap == kInitialBuffer && buffer_pool_.size() < kMaxPooledBuffers) {
    buffer_pool_.push_back(buf);
  } else {
    free(buf);
  }
}

}  // namespace tidegate::http
