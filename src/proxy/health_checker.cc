#include "proxy/health_checker.h"

#include <netinet/in.h>
#include <unistd.h>

#include <cstring>

#include "conf/directives.h"
#include "core/log.h"
#include "proxy/upstream_conn.h"
#include "upstream/upstream_json.h"

namespace tidegate::proxy {
namespace {

using core::LogLevel;

// A status line longer than this is not one a health check wants to read
// to the end (nginx's default proxy_buffer_size is 4 KB; a status line is
// ~20 bytes).
constexpr size_t kMaxStatusLine = 1024;

std::string sysError(const char* call, int status) {
  return std::string(call) + " failed (" + std::to_string(-status) + ": " + strerror(-status) + ")";
}

// RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
// The reason may be absent with its space, as many servers send it.
bool parseStatusLine(std::string_view line, int* code) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (line.size() < 12 || line.substr(0, 5) != "HTTP/" || !digit(line[5]) || line[6] != '.' || !digit(line[7]) ||
      line[8] != ' ' || !digit(line[9]) || !digit(line[10]) || !digit(line[11])) {
    return false;
  }
  if (line.size() > 12 && line[12] != ' ') return false;
  *code = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  return *code >= 100;
}

void setPort(PeerAddress* addr, int port) {
  auto p = htons(static_cast<uint16_t>(port));
  if (addr->sa.any.sa_family == AF_INET6) addr->sa.in6.sin6_port = p;
  else addr->sa.in.sin_port = p;
}

}  // namespace

// One server's probe loop: probe, report, wait, probe again. Owns its
// handles (a timer for the wait and the probe's time limit, and a socket
// per probe) and frees itself in the last close callback after stop().
class HealthProbe {
 public:
  struct Target {
    std::string upstream;
    std::string server;   // "ip:port": the server's identity in the table
    PeerAddress addr;     // where probes connect (health_check port= applied)
    std::string request;  // the HTTP probe's bytes; unused for type=tcp
    conf::HealthCheckConf hc;
  };

  // Starts the first probe now.
  static HealthProbe* start(uv_loop_t* loop, shm::UpstreamTable& table, Target target) {
    auto* p = new HealthProbe(table, std::move(target));
    uv_timer_init(loop, &p->timer_);
    p->timer_.data = p;
    p->open_handles_ = 1;
    p->probe(loop);
    return p;
  }

  // No probe and no report after this; frees itself once its handles close.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    probing_ = false;
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onHandleClosed);
    closeSocket();
  }

 private:
  HealthProbe(shm::UpstreamTable& table, Target target) : table_(table), t_(std::move(target)) {}
  ~HealthProbe() = default;

  void probe(uv_loop_t* loop) {
    probing_ = true;
    line_.clear();
    int rc = uv_tcp_init(loop, &tcp_);
    if (rc != 0) {
      probing_ = false;
      report(false, sysError("socket()", rc));
      schedule();
      return;
    }
    tcp_.data = this;
    tcp_open_ = true;
    open_handles_++;
    uv_timer_start(&timer_, onTimer, t_.hc.timeout_ms, 0);
    rc = uv_tcp_connect(&connect_req_, &tcp_, &t_.addr.sa.any, onConnect);
    if (rc != 0) finish(false, sysError("connect()", rc));
  }

  void onConnected(int status) {
    if (!probing_) return;  // closed under the request (UV_ECANCELED)
    if (status < 0) return finish(false, sysError("connect()", status));
    if (t_.hc.tcp) return finish(true, "");
    uv_buf_t buf = uv_buf_init(t_.request.data(), static_cast<unsigned>(t_.request.size()));
    int rc = uv_write(&write_req_, stream(), &buf, 1, onWrite);
    if (rc == 0) rc = uv_read_start(stream(), onAlloc, onRead);
    if (rc != 0) finish(false, sysError("send()", rc));
  }

  void onWritten(int status) {
    if (probing_ && status < 0) finish(false, sysError("send()", status));
  }

  void onData(ssize_t n, const uv_buf_t* buf) {
    if (!probing_) return;
    if (n == UV_EOF) return finish(false, line_.empty() ? "prematurely closed connection" : "bad status line");
    if (n < 0) return finish(false, sysError("recv()", static_cast<int>(n)));
    line_.append(buf->base, static_cast<size_t>(n));
    size_t eol = line_.find('\n');
    if (eol == std::string::npos) {
      if (line_.size() > kMaxStatusLine) finish(false, "bad status line");
      return;
    }
    int code = 0;
    if (!parseStatusLine(std::string_view(line_).substr(0, eol), &code)) return finish(false, "bad status line");
    if (t_.hc.statusOk(code)) finish(true, "");
    else finish(false, "status " + std::to_string(code));
  }

  void onTimeout() {
    if (probing_) finish(false, "timeout");
    else probe(timer_.loop);
  }

  // The probe is over: its socket closes, and the next one is armed once
  // it has (see onHandleClosed).
  void finish(bool ok, const std::string& error) {
    probing_ = false;
    uv_timer_stop(&timer_);
    closeSocket();
    report(ok, error);
  }

  void report(bool ok, const std::string& error) {
    const conf::HealthCheckConf& hc = t_.hc;
    bool changed = table_.reportProbe(t_.upstream, t_.server, ok, error, hc.fails, hc.passes);
    table_.health(t_.upstream, {t_.server}, &health_);
    const shm::ServerHealth& h = health_[0];
    healthy_ = h.healthy(table_.nowMs());
    if (!ok) {
      TG_LOG(LogLevel::kDebug, "health check of server %s of upstream \"%s\" failed: %s", t_.server.c_str(),
             t_.upstream.c_str(), error.c_str());
    }
    if (!changed) return;
    if (ok) {
      TG_LOG(LogLevel::kNotice, "health check: server %s of upstream \"%s\" is up: %u health check(s) passed",
             t_.server.c_str(), t_.upstream.c_str(), h.successes);
    } else {
      TG_LOG(LogLevel::kWarn, "health check: server %s of upstream \"%s\" is down: %u health check(s) failed: %s",
             t_.server.c_str(), t_.upstream.c_str(), h.failures, error.c_str());
    }
  }

  void schedule() {
    const conf::HealthCheckConf& hc = t_.hc;
    uint64_t wait = healthy_ || hc.unhealthy_interval_ms == 0 ? hc.interval_ms : hc.unhealthy_interval_ms;
    uv_timer_start(&timer_, onTimer, wait, 0);
  }

  void closeSocket() {
    if (!tcp_open_ || tcp_closing_) return;
    tcp_closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onHandleClosed);
  }

  void handleClosed(uv_handle_t* h) {
    open_handles_--;
    if (h == reinterpret_cast<uv_handle_t*>(&tcp_)) {
      tcp_open_ = false;
      tcp_closing_ = false;
      if (!stopped_) schedule();
    }
    if (stopped_ && open_handles_ == 0) delete this;
  }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  static void onConnect(uv_connect_t* req, int status) noexcept {
    static_cast<HealthProbe*>(req->handle->data)->onConnected(status);
  }
  static void onWrite(uv_write_t* req, int status) noexcept {
    static_cast<HealthProbe*>(req->handle->data)->onWritten(status);
  }
  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* p = static_cast<HealthProbe*>(h->data);
    *buf = uv_buf_init(p->buf_, sizeof(p->buf_));
  }
  static void onRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) noexcept {
    static_cast<HealthProbe*>(s->data)->onData(n, buf);
  }
  static void onTimer(uv_timer_t* t) noexcept { static_cast<HealthProbe*>(t->data)->onTimeout(); }
  static void onHandleClosed(uv_handle_t* h) noexcept { static_cast<HealthProbe*>(h->data)->handleClosed(h); }

  shm::UpstreamTable& table_;
  Target t_;
  uv_timer_t timer_;
  uv_tcp_t tcp_;
  uv_connect_t connect_req_;
  uv_write_t write_req_;
  int open_handles_ = 0;
  bool tcp_open_ = false;
  bool tcp_closing_ = false;
  bool probing_ = false;
  bool stopped_ = false;
  bool healthy_ = true;  // the server's verdict after the last probe
  std::string line_;     // the response so far, up to the status line's end
  std::vector<shm::ServerHealth> health_;
  char buf_[512];
};

HealthChecker::HealthChecker(uv_loop_t* loop, const conf::Config& cfg, shm::UpstreamTable& table)
    : loop_(loop), cfg_(cfg), table_(table), pid_(getpid()) {}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() {
  if (election_ || stopped_) return;
  election_ = new uv_timer_t;
  uv_timer_init(loop_, election_);
  election_->data = this;
  uv_timer_start(election_, onElection, 0, kElectionMs);
}

void HealthChecker::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (election_) {
    uv_timer_stop(election_);
    uv_close(reinterpret_cast<uv_handle_t*>(election_),
             [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_timer_t*>(h); });
    election_ = nullptr;
  }
  stopAllProbes();
  is_checker_ = false;
  table_.releaseChecker(pid_);
}

void HealthChecker::onElection(uv_timer_t* t) noexcept { static_cast<HealthChecker*>(t->data)->elect(); }

void HealthChecker::elect() {
  if (!table_.claimChecker(pid_)) {
    if (is_checker_) {
      TG_LOG(LogLevel::kNotice, "health checks moved to process %d", static_cast<int>(table_.checker()));
      stopAllProbes();
      is_checker_ = false;
    }
    return;
  }
  if (!is_checker_) {
    is_checker_ = true;
    seen_ = 0;
    TG_LOG(LogLevel::kNotice, "health checks run in this worker");
  }
  if (table_.version() != seen_) sync();
}

void HealthChecker::sync() {
  std::vector<shm::UpstreamTable::Entry> entries;
  seen_ = table_.list(&entries, [this](std::string_view name) -> uint64_t {
    auto it = upstreams_.find(conf::lowerCase(std::string(name)));
    return it == upstreams_.end() ? 0 : it->second.version;
  });
  std::unordered_map<std::string, Probes> next;
  for (const shm::UpstreamTable::Entry& e : entries) {
    std::string key = conf::lowerCase(e.name);
    auto it = upstreams_.find(key);
    if (it != upstreams_.end()) {
      if (it->second.version == e.version) {
        next.emplace(key, std::move(it->second));
        upstreams_.erase(it);
        continue;
      }
      stopProbes(it->second);  // changed: its probes start over from the new spec
      upstreams_.erase(it);
    }
    Probes& p = next[key];
    p.version = e.version;
    startProbes(e.name, e.spec, &p);
  }
  stopAllProbes();  // what is left was removed from the table
  upstreams_ = std::move(next);
}

void HealthChecker::startProbes(const std::string& name, const std::string& spec, Probes* out) {
  conf::UpstreamConf uc;
  std::string origin, err, field;
  if (!upstream::upstreamFromJson(spec, &uc, &origin, &cfg_.http.variables, &err, &field)) {
    TG_LOG(LogLevel::kError, "upstream \"%s\" is not health-checked: %s", name.c_str(), err.c_str());
    return;
  }
  if (!uc.health_check.enabled) return;
  const conf::HealthCheckConf& hc = uc.health_check;
  for (const conf::UpstreamServer& s : uc.servers) {
    std::string request;
    if (!hc.tcp) {
      request = "GET " + hc.uri + " HTTP/1.0\r\nHost: " + (hc.host.empty() ? s.host : hc.host) +
                "\r\nUser-Agent: tidegate-health-check\r\nConnection: close\r\n\r\n";
    }
    for (const std::string& a : s.addresses) {
      HealthProbe::Target t;
      if (!parsePeerAddress(a, &t.addr)) continue;
      if (hc.port != 0) setPort(&t.addr, hc.port);
      t.upstream = uc.name.empty() ? name : uc.name;
      t.server = a;
      t.request = request;
      t.hc = hc;
      out->probes.push_back(HealthProbe::start(loop_, table_, std::move(t)));
    }
  }
}

void HealthChecker::stopProbes(Probes& p) {
  for (HealthProbe* probe : p.probes) probe->stop();
  p.probes.clear();
}

void HealthChecker::stopAllProbes() {
  for (auto& [name, p] : upstreams_) stopProbes(p);
  upstreams_.clear();
}

}  // namespace tidegate::proxy
