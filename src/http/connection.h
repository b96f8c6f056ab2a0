// One downstream HTTP/1.1 connection: read -> parse -> route -> respond ->
// log -> keepalive or close. Every exit goes through finishRequest() or
// close(); the object frees itself in the close callback of its last handle.
#pragma once

#include <uv.h>

#include <string>

#include "conf/config.h"
#include "http/request.h"
#include "http/content_handler.h"
#include "http/request_parser.h"
#include "tls/channel.h"
#include "tls/server_context.h"

namespace tidegate::http {

class HttpServer;

class Connection : private RequestParser::Handler, private ContentSink {
 public:
  // Takes ownership of an accepted socket `fd` and starts serving it.
  static void start(HttpServer* server, int fd, const conf::Config::ListenGroup* group);

  // Graceful drain: close now if no request is in progress.
  void closeIfIdle();
  // Closes at once. Safe to call twice.
  void close();
  // The fast shutdown's close, from the server (never from inside a
  // handler): the handler tasks are freed first, while this connection,
  // which their waits (ngx.flush(true), the raw socket) still reach, is
  // whole; close() would leave them to the server's reaper, which then
  // runs after the connection is freed.
  void closeNow();
  // ssl_certificate_by_lua* for this connection's handshake, from its
  // certificate callback (connection_tls.cc). Starts the code on the first
  // call; while it waits, kPause (again on every call); once it ended, the
  // handshake is stepped again on a later loop turn and this answers with
  // how it ended.
  tls::CertificateScript::Outcome runCertificateLua(SSL* ssl, const conf::LuaCode& code, uint64_t budget_ms);

  Connection* next = nullptr;
  Connection* prev = nullptr;

 private:
  // kProcessing: the request is read and a content handler (Lua) is
  // running; no client timer applies and pipelined input waits.
  // kTunnel: after a 101, raw bytes both ways (tunnel_ gets the client's).
  enum class Phase { kIdle, kHead, kBody, kProcessing, kTunnel, kLingering, kClosing };

  Connection(HttpServer* server, const conf::Config::ListenGroup* group);
  ~Connection() override;

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) noexcept;
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  // TLS (connection_tls.cc): ciphertext arrives into the server's scratch
  // buffer, is fed to tls_, and its plaintext goes through handleRead() as
  // if read from the socket; output is encrypted in flush().
  void handleTlsRead(ssize_t nread, const uv_buf_t* buf);
  void pumpTls();
  void scheduleTlsPump();
  bool handshakeStep();
  void plainRequestOnTlsPort();
  void sendCloseNotify();
  void writeTlsAlert();
  void sealTlsOutput();
  void startReads();
  static void onWrite(uv_write_t* req, int status) noexcept;
  static void onShutdown(uv_shutdown_t* req, int status) noexcept;
  static void onTimer(uv_timer_t* t) noexcept;
  static void onClose(uv_handle_t* h) noexcept;

  void handleRead(ssize_t nread);
  void handleTimer();
  void processInput();
  int onHeadComplete(std::string* why) override;
  void onBodyData(std::string_view data) override;  // connection_lua.cc
  void onMessage();
  // The rewrite-module list, then the Lua phases (or `return`, or 404).
  // `with_server`: from the server's list (a new request, ngx.exec).
  void runPhases(bool with_server);
  void startLua(const LuaPhases& lua);
  // proxy_pass as the content phase, after the Lua phases if any (their
  // task is kept in lua_task_ for the filters and log_by_lua*).
  bool proxyLocation() const;
  bool streamsBody() const;
  void startProxy();
  // Keeps a task that runs on, or retires one that finished inside start().
  void adoptTask(std::unique_ptr<ContentTask> task, uint64_t finishes_before);
  // connection_lua.cc: the body kept for Lua, and internal redirects.
  void prepareBody();
  bool completeBody();
  bool sealBody();
  void failBody();
  void bodyArrivedDuringLua();
  void redirectInternally(ContentResult& result);
  void startRequest();
  void respond(int status, std::string_view content_type, std::string_view body, std::string_view location,
               const HeaderViews* extra_headers = nullptr);
  // The status line and headers; `content_length` < 0: unknown (chunked,
  // or close-delimited for HTTP/1.0). Returns the bytes appended.
  size_t writeHead(int status, std::string_view content_type, std::string_view location, const HeaderViews* extra,
                   int64_t content_length);
  void writeHandlerHead(ContentResult& result, int64_t content_length);
  void writeBodyPart(std::string_view data);
  void endBody();
  // With header_filter_by_lua* / body_filter_by_lua*: the head from a full
  // header list (the header filter runs first), and body pieces through
  // the body filter. `task`: the Lua context to run them in (null: the
  // request's, or a detached one made for them).
  bool hasFilters() const;
  ContentTask* filterTask(ContentTask* task);
  void sendHead(int status, HeaderList headers, int64_t content_length, ContentTask* task);
  void sendBody(std::string_view data, bool last, ContentTask* task);
  void abortResponse();
  void finish(ContentResult result, ContentTask* task) override;
  void flushOutput(ContentResult& result, bool last, ContentTask* task) override;
  bool headersSent() const override { return headers_sent_; }
  void streamBody(std::string_view data, bool last, ContentTask* task) override;
  size_t pendingOutput() const override;
  void holdOutput(bool hold) override;
  bool takeRequestBody(std::string* out) override;
  void startTunnel(const HeaderList& headers, TunnelPeer* peer) override;
  void takeOver(TunnelPeer* peer) override;
  void enterTunnel(TunnelPeer* peer);
  void tunnelWrite(std::string_view data) override;
  void pauseTunnel(bool paused) override;
  void handleTunnelRead(ssize_t nread);
  bool waitDrain(std::function<void()> cb) override;
  void cancelDrain() override { drain_cb_ = nullptr; }
  std::string absoluteRedirect(std::string_view uri) const;
  void respondError(int status, const std::string& why);
  void beginRequest();
  void finishRequest();
  void completeRequest();
  void flush();
  void afterWrite(int status);
  void startLingeringClose();
  void pauseReading();
  void resumeReading();
  uint64_t computeDeadline() const;  // absolute loop ms for the current phase; 0 = none
  bool belowMinRate() const;
  uint64_t bytesSentSoFar() const;   // of the write in flight
  void updateTimer();
  void armTimer();
  bool reserve(size_t want);
  void releaseBufferIfIdle();
  bool shouldKeepAlive(int status) const;
  // The settings of the request being served; between requests (keepalive
  // idle, a response still being written), those of the last routed request.
  // Inline: every step of a request asks.
  const conf::HttpSettings& settings() const {
    return conn_settings_ ? *conn_settings_ : group_->default_server->settings;
  }
  std::string describe() const;  // ", client: ..., server: ..., request: ..." for the error log

  // Members in the order a request touches them: with a thousand
  // connections each is cold when its next request comes, and every cache
  // line of it that a request reads is a miss (bench/cache_misses.sh). The
  // state of every request comes first, packed; then the libuv handles,
  // the parser and the request; what few requests use (TLS, partial writes,
  // shutdown, the peer's addresses) last.
  HttpServer* server_;
  const conf::Config::ListenGroup* group_;
  std::unique_ptr<tls::Channel> tls_;  // a TLS listen address: the connection's TLS
  const conf::HttpSettings* conn_settings_ = nullptr;
  std::unique_ptr<ContentTask> task_;  // a content handler still running (kProcessing)
  ContentTask* log_task_ = nullptr;             // the request's Lua phases, for log_by_lua*
  std::unique_ptr<ContentTask> aux_task_;      // a detached Lua context for filters and log (no Lua content)
  std::unique_ptr<ContentTask> lua_task_;      // the Lua phases of a proxied request (task_ is the proxy)
  TunnelPeer* tunnel_ = nullptr;

  // Read buffer: [start_, end_) holds the current request and anything
  // pipelined after it; parsed_ is the parser's position.
  char* buf_ = nullptr;
  size_t cap_ = 0;
  size_t start_ = 0;
  size_t parsed_ = 0;
  size_t end_ = 0;
  size_t head_end_ = 0;  // relative to start_, once the head is parsed
  uint64_t finishes_ = 0;  // finish() calls, to tell a handler that ended inside start()

  uint64_t head_deadline_ms_ = 0;
  uint64_t body_start_ms_ = 0;   // first body byte expected (min-rate window start)
  uint64_t send_start_ms_ = 0;   // a write started waiting for the client
  uint64_t last_io_ms_ = 0;      // last read from or write completion to the client
  uint64_t deadline_ms_ = 0;     // when the current phase times out (0: never)
  uint64_t timer_fires_at_ = 0;  // when the armed uv timer fires (0: not armed)

  Phase phase_ = Phase::kIdle;
  bool request_active_ = false;  // a request has started (first byte seen)
  // The response being written (reset per request).
  bool headers_sent_ = false;
  bool chunked_ = false;       // the body goes out in chunks
  bool body_allowed_ = true;   // false for HEAD, 204, 304
  bool body_ended_ = false;    // the last chunk is out (or the whole body)
  bool client_eof_ = false;    // the client half-closed while a handler ran
  bool log_deferred_ = false;  // the response is queued; log_by_lua* waits for it to be written
  // The Lua phases start once the head is read, while the body arrives
  // (early_start_: at the end of this parse step; lua_early_: running so).
  bool early_start_ = false;
  bool lua_early_ = false;
  bool write_pending_ = false;
  bool close_after_write_ = false;
  bool reset_after_write_ = false;  // return 444: close without lingering once output is out
  bool proxying_ = false;       // task_ is the proxy
  bool output_held_ = false;  // holdOutput(true): flushOutput/streamBody only queue
  bool tunnel_paused_ = false;
  bool proxy_pending_ = false;  // the Lua phases declined: the proxy starts once their call returns
  bool keepalive_ = true;
  bool reading_ = false;
  bool closing_ = false;
  bool in_process_ = false;
  bool tls_pump_ = false;    // TLS: plaintext waits in tls_ for reading to resume

  std::string out_;       // response bytes not yet handed to the kernel
  std::string writing_;   // bytes owned by the in-flight uv_write
  std::function<void()> drain_cb_;  // ngx.flush(true): all output written
  std::string body_stream_;  // a streamed request body read but not yet taken by the proxy

  uv_tcp_t tcp_;
  uv_timer_t timer_;
  RequestParser parser_;
  Request req_;
  ConnInfo info_;

  std::string wire_;         // TLS: ciphertext for the socket (out_ stays plaintext)
  // ssl_certificate_by_lua*: how far it got, its task while it waits, and
  // whether the handshake resumes on the next timer turn (it ended).
  enum class CertLua { kNone, kRunning, kDone, kFailed };
  CertLua cert_lua_ = CertLua::kNone;
  std::unique_ptr<ContentTask> cert_task_;
  bool cert_resume_ = false;
  void certLuaEnded(bool ok);
  void timerSoon();
  uv_write_t write_req_;
  uv_shutdown_t shutdown_req_;
  int open_handles_ = 0;
  uint64_t linger_start_ms_ = 0;
};

}  // namespace tidegate::http
