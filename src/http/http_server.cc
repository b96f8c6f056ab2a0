#include "http/http_server.h"

#include <unistd.h>

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
  for (char* b : buffer_pool_) free(b);
}

bool HttpServer::start(const std::vector<int>& fds, std::string* err) {
  if (!access_log_.open(*cfg_, err)) return false;
  for (size_t i = 0; i < cfg_->listen_groups.size() && i < fds.size(); i++) {
    auto* l = new Listener;
    l->server = this;
    l->group = &cfg_->listen_groups[i];
    uv_tcp_init(loop_, &l->handle);
    l->handle.data = l;
    // libuv closes the fd with the handle: give it its own copy.
    int fd = dup(fds[i]);
    int rc = fd < 0 ? UV_EMFILE : uv_tcp_open(&l->handle, fd);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->handle), l->group->listen.backlog, onConnection);
    listeners_.push_back(l);
    if (rc != 0) {
      *err = "listen() to " + l->group->listen.key() + " failed (" + uv_strerror(rc) + ")";
      return false;
    }
  }
  return true;
}

void HttpServer::onConnection(uv_stream_t* stream, int status) noexcept {
  auto* l = static_cast<Listener*>(stream->data);
  if (status < 0) {
    TG_LOG(LogLevel::kAlert, "accept() failed (%d: %s)", -status, uv_strerror(status));
    return;
  }
  l->server->accept(l);
}

void HttpServer::accept(Listener* l) {
  if (connections_ >= static_cast<size_t>(cfg_->worker_connections)) {
    // Accept and drop: leaving it queued would make libuv spin on the listener.
    uint64_t now = core::wallMs();
    if (now - last_overflow_log_ms_ >= 1000) {
      last_overflow_log_ms_ = now;
      TG_LOG(LogLevel::kAlert, "%d worker_connections are not enough", cfg_->worker_connections);
    }
    uv_tcp_t* tmp = new uv_tcp_t;
    uv_tcp_init(loop_, tmp);
    if (uv_accept(reinterpret_cast<uv_stream_t*>(&l->handle), reinterpret_cast<uv_stream_t*>(tmp)) == 0) {
      uv_tcp_close_reset(tmp, [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    } else {
      uv_close(reinterpret_cast<uv_handle_t*>(tmp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    }
    return;
  }
  Connection::accept(this, reinterpret_cast<uv_stream_t*>(&l->handle), l->group);
}

void HttpServer::onListenerClosed(uv_handle_t* h) noexcept { delete static_cast<Listener*>(h->data); }

void HttpServer::shutdown(bool graceful, std::function<void()> done) {
  draining_ = true;
  done_ = std::move(done);
  for (Listener* l : listeners_) uv_close(reinterpret_cast<uv_handle_t*>(&l->handle), onListenerClosed);
  listeners_.clear();
  // close() unlinks, so walk a snapshot.
  std::vector<Connection*> all;
  for (Connection* c = head_; c; c = c->next) all.push_back(c);
  for (Connection* c : all) {
    if (graceful) c->closeIfIdle();
    else c->close();
  }
  maybeDone();
}

void HttpServer::maybeDone() {
  if (draining_ && connections_ == 0 && done_) {
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
