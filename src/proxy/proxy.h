// proxy_pass: the worker's proxy module (its upstreams and connection pool)
// and the task that proxies one request, try by try: pick a peer, connect
// or reuse, send the request, read the response head, retry per
// proxy_next_upstream, then stream the body to the client with
// back-pressure. One exit for every outcome (finishTry/fail).
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "http/content_handler.h"
#include "proxy/upstream_conn.h"
#include "proxy/upstreams.h"

namespace tidegate::proxy {

struct ExchangeBuffers;

// The proxy_ssl_* settings of one http level, as the TLS client takes them,
// with the part of the pool key they make (everything but the name).
struct TlsProfile {
  tls::ClientSettings settings;
  std::string key;
};

class ProxyModule final : public http::ProxyHandler {
 public:
  ProxyModule(uv_loop_t* loop, const conf::Config& cfg, shm::UpstreamTable& table);
  ~ProxyModule() override;

  std::unique_ptr<http::ContentTask> start(http::Request& r, http::ContentSink& sink, http::ContentTask* lua) override;
  void shutdown() override;
  void setReaper(std::function<void()> reap) override { pool_.setAfterRead(std::move(reap)); }

  uv_loop_t* loop() const { return loop_; }
  ConnPool& pool() { return pool_; }
  Upstreams& upstreams() { return upstreams_; }
  // The most connections one worker may have (worker_connections): the
  // ceiling of a pool sized from demand.
  uint64_t maxIdle() const { return max_idle_; }
  // The Lua runtime that runs balancer_by_lua* (null: none).
  void setContentHandler(http::ContentHandler* h) { content_handler_ = h; }
  http::ContentHandler* contentHandler() const { return content_handler_; }
  // The TLS profile of `s`, made on first use: a level's settings live as
  // long as the worker's configuration, so their address names them.
  const TlsProfile& tlsProfile(const conf::ProxySettings& s);
  // The address balancer_by_lua* names with set_current_peer (a numeric
  // host, as that checked), or null if it is not one. The last answer is
  // kept: a balancer's code names the same few peers again and again.
  const PeerAddress* luaPeer(const std::string& host, uint16_t port);
  // A request's exchange buffers (proxy_task.h), the most recently given
  // back first (its memory is the likeliest to be in cache); given back
  // cleared, kept up to maxIdle() (at most kMaxSpareBuffers) if they hold
  // at most kMaxSpareBytesEach.
  std::unique_ptr<ExchangeBuffers> takeBuffers();
  void giveBuffers(std::unique_ptr<ExchangeBuffers> b);
  // The upstream head's fields that go to the client, as views: filled and
  // used up within the call that sends the head, one vector for the worker
  // (in cache, where one kept in a request's buffers across its upstream
  // wait would be cold).
  http::HeaderViews& responseViews() { return response_views_; }

 private:
  uv_loop_t* loop_;
  std::string lua_peer_host_;  // luaPeer's last answer ("": none)
  uint16_t lua_peer_port_ = 0;
  PeerAddress lua_peer_;
  ConnPool pool_;
  Upstreams upstreams_;
  uint64_t max_idle_;
  http::ContentHandler* content_handler_ = nullptr;
  std::unordered_map<const conf::ProxySettings*, TlsProfile> tls_profiles_;
  // Enough for the requests one worker has in flight at a time in the
  // bench's 1,000-connection case with room to spare; beyond it a request
  // allocates its own set.
  static constexpr uint64_t kMaxSpareBuffers = 4096;
  // A typical set holds 2-3 KB (a 1 KB request head, 16 field slots and
  // their strings): 8 KB keeps the common ones, not a large head's.
  static constexpr size_t kMaxSpareBytesEach = 8192;
  std::vector<std::unique_ptr<ExchangeBuffers>> spare_buffers_;
  http::HeaderViews response_views_;
};

}  // namespace tidegate::proxy
