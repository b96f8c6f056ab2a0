// The data plane of one worker: its listeners, its connections, its access
// log. Owns nothing shared with other workers except the listening fds it
// was handed by the master.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "http/access_log.h"
#include "http/content_handler.h"
#include "tls/server_context.h"

namespace tidegate::http {

class Connection;

class HttpServer : private tls::CertificateScript {
 public:
  HttpServer(uv_loop_t* loop, conf::ConfigPtr cfg);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // `fds[i]` is the listening socket of cfg->listen_groups[i]. The fds stay
  // owned by the caller's process image (dup'ed into the libuv handles).
  bool start(const std::vector<int>& fds, std::string* err);
  // Stops accepting. Graceful: in-flight requests finish, idle keepalive
  // connections close, `done` runs when the last connection is gone.
  // Not graceful: every connection closes now.
  void shutdown(bool graceful, std::function<void()> done);
  bool reopenLogs(std::string* err);
  // The handler for content_by_lua* locations (null: none configured).
  void setContentHandler(ContentHandler* h) { content_handler_ = h; }
  ContentHandler* contentHandler() const { return content_handler_; }
  // The proxy for proxy_pass locations (null: none).
  void setProxyHandler(ProxyHandler* h) {
    proxy_handler_ = h;
    if (h) h->setReaper([this] { reapNow(); });
  }
  ProxyHandler* proxyHandler() const { return proxy_handler_; }
  void setAdminHandler(AdminHandler* h) { admin_handler_ = h; }
  AdminHandler* adminHandler() const { return admin_handler_; }
  // Certificates beyond the conf's (the admin API's), consulted first by
  // the TLS of every listen address; null: none. Not owned.
  void setCertificateSource(tls::CertificateSource* src);
  // Frees a finished task on a later loop turn: it may be the caller.
  void retire(std::unique_ptr<ContentTask> task);
  // Frees the retired tasks now. Only where no task is on the stack: at
  // the end of a top-level I/O callback (the loop turn's reaper does it
  // otherwise).
  void reapNow();
  // log_by_lua* handlers still waiting after their connection moved on:
  // kept until they call releaseLog() (then retired).
  void keepLog(std::unique_ptr<ContentTask> task) { logs_.push_back(std::move(task)); }
  void releaseLog(ContentTask* task);

  uv_loop_t* loop() const { return loop_; }
  const conf::Config& config() const { return *cfg_; }
  AccessLog& accessLog() { return access_log_; }
  bool draining() const { return draining_; }
  size_t connectionCount() const { return connections_; }

  // Connection bookkeeping (called by Connection only).
  void link(Connection* c);
  void unlink(Connection* c);
  uint64_t nextConnectionId();
  char* takeBuffer(size_t* cap);
  void giveBuffer(char* buf, size_t cap);
  // The extra fields of the head a connection is writing, as views: one
  // vector for the worker (each use ends within the call that writes the
  // head), so that it is in cache where a connection's own would be cold.
  HeaderViews& headViews() { return head_views_; }
  // The TLS of a listen address with `ssl` (null for a plain one).
  tls::ServerContext* tlsContext(const conf::Config::ListenGroup* group) const;
  // Where TLS connections read ciphertext (consumed within the read callback).
  char* tlsScratch(size_t* cap) {
    *cap = sizeof(tls_scratch_);
    return tls_scratch_;
  }

 private:
  // We accept ourselves (a uv_poll on the listening fd) rather than through
  // uv_listen: out of fds or connection slots, we stop accepting and leave
  // connections queued in the kernel, where libuv would accept and drop them.
  struct Listener {
    uv_poll_t poll;
    int fd = -1;
    bool paused = false;
    HttpServer* server = nullptr;
    const conf::Config::ListenGroup* group = nullptr;
    // Specific addresses served through this (wildcard) socket, keyed by
    // the address in binary form (so "::1" and "0:0::1" are the same).
    std::vector<std::pair<std::string, const conf::Config::ListenGroup*>> by_address;
  };
  const conf::Config::ListenGroup* groupFor(const Listener* l, int fd) const;
  // ssl_certificate_by_lua* for the connection `owner`.
  Outcome runCertificateScript(SSL* ssl, void* owner, const conf::LuaCode& code, uint64_t budget_ms) override;
  static void onReadable(uv_poll_t* p, int status, int events) noexcept;
  static void onListenerClosed(uv_handle_t* h) noexcept;
  static void onRetryTimer(uv_timer_t* t) noexcept;
  static void onReap(uv_check_t* c) noexcept;
  void acceptAll(Listener* l);
  void pauseAccepting(bool retry_later);
  void resumeAccepting();
  void logRateLimited(uint64_t* last_ms, uint64_t* count, const char* fmt, int arg, bool with_errno);
  void maybeDone();

  uv_loop_t* loop_;
  conf::ConfigPtr cfg_;
  ContentHandler* content_handler_ = nullptr;
  ProxyHandler* proxy_handler_ = nullptr;
  AdminHandler* admin_handler_ = nullptr;
  tls::CertificateSource* cert_source_ = nullptr;
  AccessLog access_log_;
  std::vector<Listener*> listeners_;
  std::map<const conf::Config::ListenGroup*, std::unique_ptr<tls::ServerContext>> tls_;
  char tls_scratch_[64 * 1024];
  Connection* head_ = nullptr;  // intrusive list of live connections
  size_t connections_ = 0;
  uint64_t next_id_ = 0;
  bool draining_ = false;
  std::function<void()> done_;
  std::vector<char*> buffer_pool_;
  HeaderViews head_views_;
  uv_timer_t retry_timer_;
  uv_check_t reaper_;  // runs after I/O callbacks, when no task is on the stack
  bool reaper_open_ = false;
  std::vector<std::unique_ptr<ContentTask>> graveyard_;
  std::vector<std::unique_ptr<ContentTask>> reaping_;  // onReap's, emptied each time
  std::vector<std::unique_ptr<ContentTask>> logs_;
  bool retry_timer_open_ = false;
  bool paused_ = false;
  uint64_t last_overflow_log_ms_ = 0;
  uint64_t overflows_ = 0;
  uint64_t last_accept_log_ms_ = 0;
  uint64_t accept_errors_ = 0;
};

}  // namespace tidegate::http
