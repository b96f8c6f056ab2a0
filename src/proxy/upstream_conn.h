// One TCP connection to an upstream peer, and the per-worker keepalive pool
// that keeps idle ones. A connection belongs to one user (a proxy try)
// while busy and to the pool while idle; it frees itself once its handles
// are closed. Past `pool_conns` open connections to a peer, a try that
// finds none idle waits in the pool for one to come back (ConnPool::wait()).
//
// Reads go into one per-worker buffer: a user handles every byte inside
// onData() (parses it, copies what it keeps), so nothing is allocated per
// read and a paused connection holds no buffer.
//
// A connection may speak TLS (startTls() after connecting): this is the
// one place where bytes meet the socket, so write(), writeNow() and
// onData() carry plaintext for the user either way, and the ciphertext
// moves through tls::TlsClient's memory BIOs here.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/lazy_timer.h"
#include "tls/tls_client.h"

namespace tidegate::proxy {

// A peer's address in the form connect() takes, and its text ("ip:port"),
// which is also its pool key.
struct PeerAddress {
  // An IPv4 or IPv6 address (sockaddr_storage would be 128 bytes, most of
  // a cache line more in every proxied request's task).
  union Sockaddr {
    sockaddr_in6 in6;
    sockaddr_in in;
    sockaddr any;
  } sa{};
  socklen_t len = 0;
  std::string text;
};

// "ip:port" or "[v6]:port" (numeric only) to a PeerAddress. False if it is
// not one.
bool parsePeerAddress(const std::string& text, PeerAddress* out);

class ConnPool;
class ConnPoolWaiter;
struct IdleList;

// Monotonic microseconds, for try timings, the balancers and the pool.
inline int64_t nowUs() { return static_cast<int64_t>(uv_hrtime() / 1000); }

// How many connections to one peer a worker opens before a try that finds
// none idle waits for one to come back instead (upstream `pool_conns`,
// `pool_wait`, whose defaults are conf::UpstreamConf's). 0 in either: never
// wait, open one (nginx's way).
struct PoolLimits {
  uint64_t conns = 0;
  uint64_t wait_ms = 0;
};

class UpstreamConn {
 public:
  // What a busy connection reports to its user. Every callback comes from
  // the loop; the user may close() or release the connection inside any.
  class User {
   public:
    virtual ~User() = default;
    virtual void onConnected(int status) = 0;  // 0 or a libuv error
    virtual void onWritten(int status) = 0;    // the last write() is in the kernel (0) or failed
    virtual void onData(const char* data, size_t len) = 0;
    virtual void onReadEnd(int status) = 0;    // UV_EOF or a libuv error; reading stopped
    virtual void onTimeout() = 0;              // the timer set with setTimer() fired
    // The TLS handshake that startTls() began ended; when !ok, tlsError() says why.
    virtual void onHandshake(bool ok) = 0;
  };

  // A new connection to a peer (not yet connecting), pooled under `key`
  // (the peer's text, plus the TLS settings for a TLS connection).
  // `now_us`: nowUs() (the pool's record of when a connection last moved).
  static UpstreamConn* create(ConnPool* pool, std::string key, int64_t now_us);

  // Starts connecting; onConnected() follows. False (with *status) if
  // connect() failed at once (no callback then).
  bool connect(User* user, const PeerAddress& peer, int* status);
  // Hands a connection taken from the pool to its new user.
  void attach(User* user, int64_t now_us);
  // A connected connection speaks TLS through `tls` from now on: the
  // handshake starts (onHandshake() follows). False, with tlsError() set,
  // if it failed at once (no callback then).
  bool startTls(std::unique_ptr<tls::TlsClient> tls);
  tls::TlsClient* tls() const { return tls_.get(); }
  // nginx's words for why the handshake or a TLS read failed.
  const std::string& tlsError() const { return tls_error_; }
  // Writes `n` buffers (kept alive by the caller until onWritten()). One
  // write at a time. A write that fails at once is reported from the loop
  // through the connection's timer (set the timer before writing).
  void write(const uv_buf_t* bufs, unsigned n);
  // Writes what the kernel takes now. True if that was everything (no
  // onWritten() follows); false with *error set if writing failed (no
  // onWritten() either); else false and the rest follows with write().
  // Unlike write(), no event-loop watcher changes when all fits.
  bool writeNow(const uv_buf_t* bufs, unsigned n, int* error);
  void startReading();
  void stopReading();
  // One timer per connection: connect, send or read timeout (ms). Lazy
  // (core::LazyTimer): a later deadline seldom touches the timer heap.
  void setTimer(uint64_t ms) { timer_.set(ms, onTimer); }
  void stopTimer() { timer_.clear(); }
  // Closes and frees the connection (a TLS one sends close_notify if the
  // socket takes it now). No callback after this.
  void close();
  // Gives an idle connection back to the pool (or closes it if the pool is
  // full, draining or the connection served keepalive_requests). `now_us`:
  // when its exchange ended (nowUs()): a try waits for a connection only
  // while they move (ConnPool::wait()).
  void release(uint64_t idle_timeout_ms, uint64_t max_idle, uint64_t max_requests, int64_t now_us);

  // False if the peer already closed this (idle) connection or sent
  // something unasked: a non-blocking peek, for requests that must not be
  // sent on a connection that cannot take them.
  bool peerOpen();
  const std::string& key() const { return key_; }
  uint64_t requests() const { return requests_; }
  void countRequest() { requests_++; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

 private:
  friend class ConnPool;
  UpstreamConn(ConnPool* pool, std::string key);
  ~UpstreamConn() = default;

  static void onConnect(uv_connect_t* req, int status) noexcept;
  static void onWrite(uv_write_t* req, int status) noexcept;
  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) noexcept;
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void onTimer(uv_timer_t* t) noexcept;
  static void onClose(uv_handle_t* h) noexcept;
  static void onTlsWrite(uv_write_t* req, int status) noexcept;
  // A read on a TLS connection: drives the handshake or decrypts for the user.
  void readTls(const char* data, size_t len);
  void handshakeStep();
  // Writes what TLS produced on its own (handshake flights, alerts).
  void flushTls();
  // The pending ciphertext of the user's write: what the kernel takes now,
  // the rest with write_req_. True if all went out at once.
  bool writeCipher(int* error);

  // What every exchange reads first and packed (with a thousand pooled
  // connections each is cold when it is taken again); TLS and the rare
  // write and connect requests last.
  ConnPool* pool_;
  User* user_ = nullptr;  // null while idle in the pool
  uint64_t requests_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool in_pool_ = false;
  int write_failed_ = 0;  // a write that failed at once, reported from the timer
  // In the pool: its peer's idle list (most recent first).
  UpstreamConn* idle_next_ = nullptr;
  UpstreamConn* idle_prev_ = nullptr;
  IdleList* idle_list_;  // its key's entry in the pool (never erased), from the start
  std::unique_ptr<tls::TlsClient> tls_;
  std::string key_;
  uv_tcp_t tcp_;
  core::LazyTimer timer_;
  int open_handles_ = 0;
  uv_connect_t connect_req_;
  uv_write_t write_req_;
  std::string tls_out_;    // ciphertext of the user's write in flight
  std::string plain_;      // decrypted bytes handed to onData()
  std::string tls_error_;
};

// One pool key's connections: the idle ones, most recently used first; how
// many are open (connecting, busy or idle); the tries waiting for one.
struct IdleList {
  UpstreamConn* head = nullptr;
  UpstreamConn* tail = nullptr;
  size_t count = 0;
  size_t open = 0;
  // Waiting tries, first come first served (ConnPool::wait()).
  ConnPoolWaiter* wait_head = nullptr;
  ConnPoolWaiter* wait_tail = nullptr;
  size_t waiting = 0;
  bool in_service = false;  // in the pool's list of keys with waiters
  PoolLimits limits;        // as the last try that came set them
  // When a connection last changed hands: opened, taken or given back.
  int64_t last_move_us = 0;
};

// A try that waits for a connection (ConnPool::wait()).
class ConnPoolWaiter {
 public:
  virtual ~ConnPoolWaiter() = default;
  // Its turn, once, from the loop (never inside another task's call): an
  // idle connection to its key is in the pool, fewer than `pool_conns` are
  // open, or its wait is over. It takes a connection of `l` (its key's) or
  // opens one.
  virtual void onPoolTurn(IdleList& l) = 0;

 private:
  friend class ConnPool;
  ConnPoolWaiter* wait_next_ = nullptr;
  ConnPoolWaiter* wait_prev_ = nullptr;
  IdleList* wait_list_ = nullptr;  // set while it waits
  int64_t wait_until_us_ = 0;
};

// The idle connections of one worker, by peer. Each idle connection keeps
// reading (data or a close from the peer means it cannot be reused: it is
// closed at once) and has its keepalive timer running.
class ConnPool {
 public:
  explicit ConnPool(uv_loop_t* loop);
  ~ConnPool();
  ConnPool(const ConnPool&) = delete;
  ConnPool& operator=(const ConnPool&) = delete;

  // The connections to `key` (made on first use, never erased). find()
  // first: with a few keys it compares them without hashing.
  IdleList& peer(const std::string& key) {
    auto it = idle_.find(key);
    return it != idle_.end() ? it->second : idle_[key];
  }
  // An idle connection of `l`, most recently used first; null if none.
  static UpstreamConn* take(const IdleList& l) { return l.head; }
  // A try to `l`'s key found no idle connection (or other tries wait for
  // one before it). True if it waits (queued: onPoolTurn() follows), false
  // if it should open one now: waiting is off, or no try waits and fewer
  // than `limits.conns` are open or none changed hands for `limits.wait_ms`
  // (every one is held by an exchange that has lasted that long).
  // A try whose wait reaches `limits.wait_ms` opens one anyway.
  bool wait(IdleList& l, ConnPoolWaiter* w, const PoolLimits& limits, int64_t now_us);
  // A waiting try that ends (no turn follows).
  void cancelWait(ConnPoolWaiter* w);
  // Stops pooling: closes every idle connection now; released ones close.
  void shutdown();

  uv_loop_t* loop() const { return loop_; }
  // The last TLS session a peer gave, by pool key (proxy_ssl_session_reuse):
  // null if none. keepSession() retains `box` and drops the previous one.
  const tls::TlsSessionBox* session(const std::string& key) const;
  void keepSession(const std::string& key, tls::TlsSessionBox* box);
  size_t idleCount() const { return idle_total_; }
  size_t idleCount(const std::string& key) const;
  char* readBuffer() { return read_buf_; }
  static constexpr size_t kReadBufferSize = 64 * 1024;
  // Runs at the end of a connection's read callback, when no task is on
  // the stack (the server's reaper: a request that ended there is freed
  // at once).
  void setAfterRead(std::function<void()> f) { after_read_ = std::move(f); }

 private:
  friend class UpstreamConn;
  void put(UpstreamConn* c, uint64_t max_idle, int64_t now_us);
  void remove(UpstreamConn* c);
  // A connection of `l` came back or closed: its waiters are served from
  // the loop, before its next poll.
  void kick(IdleList& l);
  // Gives a turn to every waiter that may have one; the rest wait on.
  void serve();
  void armWaitTimer();
  static void onServe(uv_idle_t* h) noexcept;
  static void onWaitTimer(uv_timer_t* t) noexcept;

  uv_loop_t* loop_;
  std::unordered_map<std::string, IdleList> idle_;  // entries are never erased
  std::unordered_map<std::string, tls::TlsSessionBox*> sessions_;
  size_t idle_total_ = 0;
  bool shut_ = false;
  char* read_buf_;
  std::function<void()> after_read_;
  // Keys with waiters; the loop handles that serve them (allocated on first
  // use: the pool may go before the loop runs their close callbacks).
  std::vector<IdleList*> serving_;
  uv_idle_t* serve_idle_ = nullptr;
  uv_timer_t* wait_timer_ = nullptr;
};

}  // namespace tidegate::proxy
