#include "process/worker.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "admin/admin_api.h"
#include "core/log.h"
#include "http/http_server.h"
#include "lua/phases/content.h"
#include "lua/timer.h"
#include "proxy/health_checker.h"
#include "proxy/proxy.h"
#include "shm/registry.h"
#include "shm/upstream_table.h"
#include "tls/dynamic_certs.h"

namespace tidegate::process {
namespace {

using core::LogLevel;

// The periodic half of shared dict expiry: each worker looks at the least
// recently used entries of every zone once a second.
constexpr uint64_t kSweepIntervalMs = 1000;
constexpr uint64_t kSweepScan = 1000;

class Worker {
 public:
  Worker(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, int channel, int slot)
      : cfg_(std::move(cfg)), vm_(std::move(vm)), channel_fd_(channel), slot_(slot) {}

  int run(const std::vector<int>& fds) {
    if (cfg_->worker_rlimit_nofile > 0) {
      struct rlimit rl;
      getrlimit(RLIMIT_NOFILE, &rl);
      rl.rlim_cur = cfg_->worker_rlimit_nofile;
      if (rl.rlim_max < rl.rlim_cur) rl.rlim_max = rl.rlim_cur;  // needs root, as in nginx
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        TG_LOG(LogLevel::kAlert, "setrlimit(RLIMIT_NOFILE, %llu) failed (%d: %s), ignored",
               static_cast<unsigned long long>(cfg_->worker_rlimit_nofile), errno, strerror(errno));
      }
    }
    uv_loop_init(&loop_);
    server_ = std::make_unique<http::HttpServer>(&loop_, cfg_);
    shm::UpstreamTable* table = shm::UpstreamTable::shared();
    if (!table) {
      TG_LOG(LogLevel::kEmerg, "cannot map the shared upstream table");
      return 2;
    }
    proxy_ = std::make_unique<proxy::ProxyModule>(&loop_, *cfg_, *table);
    server_->setProxyHandler(proxy_.get());
    if (cfg_->http.admin.enabled) {
      admin_ = std::make_unique<admin::AdminApi>(*cfg_, *table, vm_.get());
      server_->setAdminHandler(admin_.get());
      dynamic_certs_ = std::make_unique<tls::DynamicCerts>(cfg_->http.admin.state_dir,
                                                           [table] { return table->certVersion(); });
      dynamic_certs_->refresh();
      server_->setCertificateSource(dynamic_certs_.get());
    }
    checker_ = std::make_unique<proxy::HealthChecker>(&loop_, *cfg_, *table);
    if (vm_) {
      content_handler_ = std::make_unique<lua::LuaContentHandler>(*vm_, &loop_);
      server_->setContentHandler(content_handler_.get());
      proxy_->setContentHandler(content_handler_.get());
      timers_ = std::make_unique<lua::Timers>(*vm_, &loop_);
      vm_->setTimers(timers_.get());
    }
    std::string err;
    if (!server_->start(fds, &err)) {
      TG_LOG(LogLevel::kEmerg, "%s", err.c_str());
      return 2;
    }
    // The libuv handles hold their own dups; the inherited copies would keep
    // a listener alive after the master drops it.
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
    runInitWorker();
    if (!cfg_->http.lua.shared_dicts.empty()) {
      // Expired dict entries no one touches are freed within a few seconds.
      uv_timer_init(&loop_, &sweep_timer_);
      uv_timer_start(&sweep_timer_, onSweep, kSweepIntervalMs, kSweepIntervalMs);
      uv_unref(reinterpret_cast<uv_handle_t*>(&sweep_timer_));
      has_sweep_timer_ = true;
    }
    if (channel_fd_ >= 0) {
      uv_pipe_init(&loop_, &channel_, 0);
      channel_.data = this;
      uv_pipe_open(&channel_, channel_fd_);
      uv_read_start(reinterpret_cast<uv_stream_t*>(&channel_), onAlloc, onChannel);
      has_channel_ = true;
    } else {
      for (int i = 0; i < 4; i++) {
        static const int kSignals[] = {SIGQUIT, SIGTERM, SIGINT, SIGUSR1};
        uv_signal_init(&loop_, &signals_[i]);
        signals_[i].data = this;
        uv_signal_start(&signals_[i], onSignal, kSignals[i]);
      }
      has_signals_ = true;
    }
    checker_->start();
    uv_run(&loop_, UV_RUN_DEFAULT);
    runExitWorker();
    lua::Watchdog::stop();
    checker_.reset();
    server_.reset();
    proxy_.reset();
    if (vm_) vm_->setTimers(nullptr);
    timers_.reset();
    lua::closeSocketPool();
    uv_run(&loop_, UV_RUN_NOWAIT);  // close callbacks of what they still held
    int rc = uv_loop_close(&loop_);
    if (rc != 0) TG_LOG(LogLevel::kAlert, "worker loop closed with open handles (%s)", uv_strerror(rc));
    return 0;
  }

 private:
  // init_worker_by_lua*: an error is logged and the worker serves anyway,
  // as in OpenResty.
  void runInitWorker() {
    if (!vm_) return;
    vm_->setWorkerId(slot_);
    std::string err;
    if (uint64_t budget = lua::minBudgetTimeout(*cfg_)) {
      // Before init_worker_by_lua*, so every trace is compiled with the watchdog's checks.
      if (!lua::Watchdog::start(vm_->state(), lua::Watchdog::intervalFor(budget), &err)) {
        TG_LOG(LogLevel::kAlert, "%s", err.c_str());
      }
    }
    if (!vm_->run(cfg_->http.lua.init_worker, lua::Phase::kInitWorker, &err)) {
      TG_LOG(LogLevel::kError, "init_worker_by_lua error: %s", err.c_str());
    }
  }

  // exit_worker_by_lua*: the last Lua the worker runs, after its
  // connections and timers are done; errors are logged.
  void runExitWorker() {
    if (!vm_ || cfg_->http.lua.exit_worker.empty()) return;
    std::string err;
    if (!vm_->run(cfg_->http.lua.exit_worker, lua::Phase::kExitWorker, &err)) {
      TG_LOG(LogLevel::kError, "exit_worker_by_lua error: %s", err.c_str());
    }
  }

  static void onSweep(uv_timer_t*) noexcept { shm::SharedDicts::instance().sweepExpired(kSweepScan); }

  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* w = static_cast<Worker*>(h->data);
    *buf = uv_buf_init(w->cmd_, sizeof(w->cmd_));
  }

  static void onChannel(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) noexcept {
    auto* w = static_cast<Worker*>(s->data);
    if (n < 0) {
      w->stop(true);  // master gone: finish what we have and leave
      return;
    }
    for (ssize_t i = 0; i < n; i++) w->command(buf->base[i]);
  }

  static void onSignal(uv_signal_t* s, int signum) noexcept {
    auto* w = static_cast<Worker*>(s->data);
    if (signum == SIGUSR1) w->command('r');
    else w->command(signum == SIGQUIT ? 'q' : 't');
  }

  static void onShutdownTimer(uv_timer_t* t) noexcept {
    auto* w = static_cast<Worker*>(t->data);
    TG_LOG(LogLevel::kWarn, "worker_shutdown_timeout expired, closing remaining connections");
    if (w->timers_) w->timers_->abortAll();
    w->server_->shutdown(false, [w] { w->serverDone(); });
  }

  void command(char c) {
    switch (c) {
      case 'q': stop(true); break;
      case 't': stop(false); break;
      case 'r': {
        std::string err;
        if (!core::ErrorLog::reopen(&err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
        if (!server_->reopenLogs(&err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
        else TG_LOG(LogLevel::kNotice, "worker reopened its logs");
        break;
      }
      default: break;
    }
  }

  void stop(bool graceful) {
    if (stopping_ && graceful) return;
    stopping_ = true;
    // A stopping worker probes no more and frees the checker slot at once
    // (a reload's new workers take it over while this one drains).
    checker_->stop();
    if (vm_) vm_->setExiting();
    if (graceful && cfg_->worker_shutdown_timeout_ms > 0 && !timer_armed_) {
      uv_timer_init(&loop_, &shutdown_timer_);
      shutdown_timer_.data = this;
      uv_timer_start(&shutdown_timer_, onShutdownTimer, cfg_->worker_shutdown_timeout_ms, 0);
      timer_armed_ = true;
    }
    if (timers_) {
      // Graceful: pending timers run now with premature = true.
      if (graceful) timers_->shutdown([this] { timersDone(); });
      else {
        timers_->abortAll();
        timers_done_ = true;
      }
    }
    server_->shutdown(graceful, [this] { serverDone(); });
  }

  void serverDone() {
    server_done_ = true;
    if (!timers_ || timers_done_) closeAll();
  }
  void timersDone() {
    timers_done_ = true;
    if (server_done_) closeAll();
  }

  // The last connection and Lua timer are gone: close our own handles so
  // uv_run returns.
  void closeAll() {
    checker_->stop();
    if (has_channel_) {
      has_channel_ = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&channel_), nullptr);
    }
    if (has_signals_) {
      has_signals_ = false;
      for (auto& s : signals_) uv_close(reinterpret_cast<uv_handle_t*>(&s), nullptr);
    }
    if (timer_armed_) {
      timer_armed_ = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
    }
    if (has_sweep_timer_) {
      has_sweep_timer_ = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
    }
  }

  conf::ConfigPtr cfg_;
  std::shared_ptr<lua::Vm> vm_;
  int channel_fd_;
  int slot_;
  uv_loop_t loop_;
  uv_pipe_t channel_;
  uv_signal_t signals_[4];
  uv_timer_t shutdown_timer_;
  uv_timer_t sweep_timer_;
  bool has_sweep_timer_ = false;
  bool has_channel_ = false;
  bool has_signals_ = false;
  bool timer_armed_ = false;
  bool stopping_ = false;
  bool server_done_ = false;
  bool timers_done_ = false;
  char cmd_[64];
  std::unique_ptr<lua::LuaContentHandler> content_handler_;
  std::unique_ptr<lua::Timers> timers_;
  std::unique_ptr<proxy::ProxyModule> proxy_;
  std::unique_ptr<admin::AdminApi> admin_;
  std::unique_ptr<tls::DynamicCerts> dynamic_certs_;  // outlives server_ (its contexts point here)
  std::unique_ptr<proxy::HealthChecker> checker_;
  std::unique_ptr<http::HttpServer> server_;  // declared last: destroyed first
};

}  // namespace

int runWorker(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, const std::vector<int>& listen_fds, int channel,
              int slot) {
  Worker w(std::move(cfg), std::move(vm), channel, slot);
  return w.run(listen_fds);
}

}  // namespace tidegate::process
