// The task that proxies one request (see proxy.h). Internal to src/proxy/:
// proxy.cc runs the tries (pick, connect, retry policy, passive health),
// proxy_io.cc moves the bytes (the request out, the response and tunnels
// back).
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/recycled.h"
#include "http/content_handler.h"
#include "proxy/proxy.h"
#include "proxy/request_builder.h"
#include "proxy/response_parser.h"
#include "proxy/upstream_conn.h"

namespace tidegate::proxy {

// What one proxied request fills and would otherwise allocate anew every
// time: the module keeps sets of them between requests (takeBuffers), with
// their capacity, so a request in the steady state allocates nothing for
// its exchange.
struct ExchangeBuffers {
  ResponseParser parser;     // its field strings keep their capacity too
  std::string request_head;  // the upstream request's head (BuiltRequest::head)
  std::vector<size_t> tried; // the balancer's peers tried so far
};

// One proxied request. Owned by the downstream connection (as its content
// task); owns its upstream connection while a try runs.
class ProxyTask final : public http::ContentTask,
                        public core::Recycled<ProxyTask, 4096>,
                        private UpstreamConn::User,
                        private ConnPoolWaiter,
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
        read_timeout_ms_(*s_.read_timeout_ms),
        x_(m.takeBuffers()),
        parser_(x_->parser),
        tried_(x_->tried) {
    parser_.onBody([this](std::string_view data) { forwardBody(data); });
    req_.head = std::move(x_->request_head);
  }
  ~ProxyTask() override {
    if (waiting_drain_) sink_.cancelDrain();
    m_.pool().cancelWait(this);
    dropConnection();
    if (body_fd_ >= 0) ::close(body_fd_);
    if (balancer_timer_) {
      uv_close(reinterpret_cast<uv_handle_t*>(balancer_timer_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    }
    x_->request_head = std::move(req_.head);
    m_.giveBuffers(std::move(x_));
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
  enum class State { kWaitBody, kBalancer, kConnecting, kHandshaking, kSending, kWaitHead, kStreaming, kTunnel, kDone };

  void startTries();
  void startTry();
  // The try once its peer may be chosen (after balancer_by_lua*).
  void tryPeer();
  // The upstream's balancer picks this try's peer. False if none may be
  // picked (the request was answered).
  bool pickPeer(int64_t now_us);
  // The upstream's Lua balancer module, when it has one: its pick if that
  // names a usable peer not tried yet; nullopt falls back to round robin
  // (an error in the module is logged).
  std::optional<size_t> pickWithLua(const upstream::PickContext& ctx);
  // balancer_by_lua*: the upstream's code runs before every try and may
  // set the peer, grant more tries, change timeouts (http::BalancerCall).
  // False if the try cannot go on now: the request was answered (an error
  // in the code, ngx.exit), or the code waits on a cosocket (state
  // kBalancer, under lua_balancer_timeout; the timer's callbacks go on).
  bool runBalancerLua();
  // The code ended (ok: without an error): applies what it set. False if
  // the request was answered instead.
  bool balancerResult(bool ok);
  bool applyBalancerCall(const http::BalancerCall& call);
  static void onBalancerEnded(uv_timer_t* t) noexcept;
  static void onBalancerTimeout(uv_timer_t* t) noexcept;
  bool balancerLua() const { return rt_->balancer_lua != nullptr; }
  const PeerAddress& peerAddress() const { return lua_choice_.peer ? rare_->lua_peer : peer_addr_; }
  // Passive health: this try's failure counts against its peer (not one
  // balancer_by_lua* chose); logs when that took the peer out.
  void reportFailure(std::string_view why);
  // A connection from the pool for this try (one the peer has not closed,
  // for a request that must not be sent twice). False if none is idle.
  bool takePooled(IdleList& l, int64_t now_us);
  // The pool had none idle and this try waited (in state kConnecting, no
  // connection yet): its turn came.
  void onPoolTurn(IdleList& l) override;
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
  // nginx's words for a read that ended with `status` (UV_EOF or an error).
  std::string readFailure(int status) const;
  void onTimeout() override;
  // proxy_pass https://: the proxy_ssl_* settings of this request (once per
  // request: the name may have variables).
  void prepareTls();
  // The pool key of this try's peer: its address, plus the TLS settings.
  std::string poolKey() const { return rare_ ? peerAddress().text + rare_->tls_key : peerAddress().text; }
  void startHandshake();
  void onHandshake(bool ok) override;
  // The handshake's peer, checked as proxy_ssl_verify asks: why not (nginx's
  // words), or "" when it passes.
  std::string verifyPeer() const;
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
  void logError(core::LogLevel level, const std::string& why);
  // The try's outcome to the balancer; `now_us`: when it ended.
  void endTry(upstream::Outcome outcome, int64_t now_us);
  void endTry(upstream::Outcome outcome) { endTry(outcome, nowUs()); }
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
  // From the module, back to it at the end; parser_ and tried_ live there.
  std::unique_ptr<ExchangeBuffers> x_;
  ResponseParser& parser_;
  std::vector<size_t>& tried_;

  std::shared_ptr<UpstreamRuntime> rt_;
  ProxyTarget target_;
  BuiltRequest req_;
  bool is_head_ = false;
  bool non_idempotent_ = false;

  // The current try.
  UpstreamConn* conn_ = nullptr;
  size_t peer_ = 0;             // the balancer's index as of peer_gen_
  uint64_t peer_gen_ = 0;       // rt_->generation when peer_ was picked
  PeerAddress peer_addr_;       // the picked peer (its text is its id)
  bool have_peer_ = false;
  bool request_sent_ = false;     // a byte of the request may have reached the peer
  bool request_done_ = false;     // the whole request is in the kernel
  bool got_bytes_ = false;        // the peer sent something on this connection
  bool conn_reused_ = false;      // the connection came from the pool
  bool fresh_retry_done_ = false; // a pooled connection that was closed was replaced once
  int64_t try_start_us_ = 0;
  uint64_t body_offset_ = 0;
  int body_fd_ = -1;
  uv_buf_t bufs_[2];
  bool stream_writing_ = false;
  bool stream_last_ = false;         // the piece being written ends the body
  bool body_streamed_ = false;       // some of the body left the client connection: no replay
  bool request_head_written_ = false;
  uint64_t tries_ = 0;
  int64_t first_try_us_ = 0;
  // The last failed try, for ngx.balancer.get_last_failure(): "failed" or
  // "next" (a 403 or 404), and its status.
  const char* last_state_ = "";
  int last_status_ = 0;

  // balancer_by_lua*: what the upstream's code chose.
  struct LuaChoice {
    bool peer = false;  // this try's peer: rare_->lua_peer, not the balancer's pick
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
  // balancer_by_lua* that waits (its call and task are in rare_): one timer
  // for its time budget and then for going on from the loop once it ended
  // (the task cannot be freed inside its own callback).
  uv_timer_t* balancer_timer_ = nullptr;
  bool balancer_ok_ = false;

  // What few requests use, made on first use (rare()): a plain request
  // builds, touches and frees only the members above. With a thousand
  // connections every cache line of a task misses where the task is built
  // and again where it is freed (bench/README.md "proxy_1000").
  struct Rare : core::Recycled<Rare, 1024> {  // balancer_by_lua* makes one per request
    std::string hash_key;  // chash: the key, evaluated once per request
    // proxy_pass https://: the settings' pool key part, the name that is
    // sent as SNI (when proxy_ssl_server_name) and checked.
    std::string tls_key;
    std::string tls_name;
    const TlsProfile* tls_profile = nullptr;
    std::string body_chunk;  // a piece of a request body read from its file
    std::string tunnel_buf;  // client bytes on their way upstream
    // A streamed request body (proxy_request_buffering off).
    std::string stream_piece;
    std::string chunk_head;
    PeerAddress lua_peer;  // balancer_by_lua*'s set_current_peer()
    // balancer_by_lua* that waits: what it sets, and its task (freed first).
    http::BalancerCall balancer_call;
    std::unique_ptr<http::ContentTask> balancer_run;
  };
  Rare& rare() {
    if (!rare_) rare_ = std::make_unique<Rare>();
    return *rare_;
  }
  std::unique_ptr<Rare> rare_;

  bool head_sent_ = false;       // the response head went to the client
  bool waiting_drain_ = false;
  size_t high_water_ = 0;
};

}  // namespace tidegate::proxy
