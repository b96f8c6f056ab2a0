#include "process/master.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <csignal>
#include <initializer_list>
#include <cstring>
#include <vector>

#include "admin/state_store.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/access_log.h"
#include "process/listeners.h"
#include "process/pidfile.h"
#include "process/worker.h"
#include "shm/upstream_table.h"
#include "tidegate/version.h"
#include "tls/session_cache.h"
#include "upstream/publish.h"

namespace tidegate::process {
namespace {

using core::LogLevel;

volatile sig_atomic_t g_reload = 0;
volatile sig_atomic_t g_quit = 0;
volatile sig_atomic_t g_terminate = 0;
volatile sig_atomic_t g_reopen = 0;
volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_upgrade = 0;

void onSignal(int sig) {
  switch (sig) {
    case SIGHUP: g_reload = 1; break;
    case SIGQUIT: g_quit = 1; break;
    case SIGTERM: case SIGINT: g_terminate = 1; break;
    case SIGUSR1: g_reopen = 1; break;
    case SIGUSR2: g_upgrade = 1; break;
    case SIGCHLD: g_child = 1; break;
    default: break;
  }
}

constexpr int kMasterSignals[] = {SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGCHLD};
// A worker that dies sooner than this after its start counts as "keeps dying".
constexpr uint64_t kQuickDeathMs = 2000;
constexpr uint64_t kMaxBackoffMs = 5000;
// After a fast stop, how long workers get before SIGKILL.
constexpr uint64_t kTerminateGraceMs = 5000;

// In a freshly forked child: the master's handlers back to the default
// (`ignored` to SIG_IGN), then unblocked. Ignoring before unblocking keeps a
// signal pending from the master's mask from acting on the child.
void resetSignalsInChild(std::initializer_list<int> ignored) {
  for (int s : kMasterSignals) signal(s, SIG_DFL);
  for (int s : ignored) signal(s, SIG_IGN);
  sigset_t empty;
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, nullptr);
}

struct WorkerSlot {
  pid_t pid = -1;
  int channel = -1;  // master's end of the socketpair
  int slot = 0;
  uint64_t generation = 0;
  uint64_t started_ms = 0;
  bool retiring = false;  // old generation: told to quit, not respawned
};

class Master {
 public:
  Master(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, conf::LoadOptions opts, ListenerSet* listeners)
      : cfg_(std::move(cfg)), vm_(std::move(vm)), opts_(std::move(opts)), listeners_(*listeners) {}

  int run() {
    std::string err;
    installSignals();
    if (!cfg_->pid_file.empty() && !writePidFile(cfg_->pid_file, getpid(), &err)) {
      TG_LOG(LogLevel::kEmerg, "%s", err.c_str());
      return 1;
    }
    TG_LOG(LogLevel::kNotice, "tidegate/%s started, %d worker processes", TIDEGATE_VERSION, cfg_->worker_processes);
    for (int i = 0; i < cfg_->worker_processes; i++) spawn(i);
    loop();
    if (!cfg_->pid_file.empty()) {
      removePidFile(cfg_->pid_file, getpid());
      removePidFile(oldbinPath(), getpid());  // after a binary upgrade
    }
    TG_LOG(LogLevel::kNotice, "exit");
    return 0;
  }

 private:
  void installSignals() {
    sigset_t set;
    sigemptyset(&set);
    struct sigaction sa {};
    sa.sa_handler = onSignal;
    sigemptyset(&sa.sa_mask);
    for (int s : kMasterSignals) {
      sigaddset(&set, s);
      sigaction(s, &sa, nullptr);
    }
    signal(SIGPIPE, SIG_IGN);
    // Blocked except while waiting, so no flag is missed between checks.
    sigprocmask(SIG_BLOCK, &set, &wait_mask_);
    sigdelset(&wait_mask_, SIGHUP);
    for (int s : kMasterSignals) sigdelset(&wait_mask_, s);
  }

  void loop() {
    for (;;) {
      int timeout_ms = nextTimeoutMs();
      struct timespec ts;
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
      ppoll(nullptr, 0, timeout_ms < 0 ? nullptr : &ts, &wait_mask_);
      if (g_child) { g_child = 0; reap(); }
      if (g_terminate && !terminating_) { terminating_ = true; terminateAll(); }
      if (g_quit && !quitting_) { quitting_ = true; quitAll(); }
      if (g_reload) { g_reload = 0; if (!quitting_ && !terminating_) reload(); }
      if (g_reopen) { g_reopen = 0; reopen(); }
      if (g_upgrade) {
        g_upgrade = 0;
        if (!quitting_ && !terminating_) upgrade();
      }
      if (terminating_ && core::wallMs() >= terminate_deadline_ms_) killAll();
      if ((quitting_ || terminating_) && workers_.empty()) return;
      if (!quitting_ && !terminating_) respawnDue();
    }
  }

  int nextTimeoutMs() const {
    int64_t best = -1;
    uint64_t now = core::wallMs();
    auto consider = [&](uint64_t at) {
      int64_t d = at > now ? static_cast<int64_t>(at - now) : 0;
      if (best < 0 || d < best) best = d;
    };
    for (const auto& p : pending_) consider(p.second);
    if (terminating_) consider(terminate_deadline_ms_);
    return static_cast<int>(best);
  }

  void spawn(int slot) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      TG_LOG(LogLevel::kAlert, "socketpair() failed (%d: %s)", errno, strerror(errno));
      pending_.push_back({slot, core::wallMs() + 1000});
      return;
    }
    std::vector<int> fds = listeners_.fdsFor(*cfg_, slot);
    pid_t pid = fork();
    if (pid < 0) {
      TG_LOG(LogLevel::kAlert, "fork() failed (%d: %s)", errno, strerror(errno));
      ::close(sv[0]);
      ::close(sv[1]);
      pending_.push_back({slot, core::wallMs() + 1000});
      return;
    }
    if (pid == 0) {
      ::close(sv[0]);
      for (const auto& w : workers_) ::close(w.channel);
      listeners_.closeAllExcept(fds);
      // The master decides about reloads and relays reopen over the channel.
      resetSignalsInChild({SIGHUP, SIGUSR1});
      _exit(runWorker(cfg_, vm_, fds, sv[1], slot));
    }
    ::close(sv[1]);
    WorkerSlot w;
    w.pid = pid;
    w.channel = sv[0];
    w.slot = slot;
    w.generation = generation_;
    w.started_ms = core::wallMs();
    workers_.push_back(w);
    TG_LOG(LogLevel::kNotice, "start worker process %d", pid);
  }

  void send(const WorkerSlot& w, char cmd) {
    if (w.channel < 0) return;
    ssize_t n = ::write(w.channel, &cmd, 1);
    (void)n;  // a dead worker's channel fails; its SIGCHLD is on the way
  }

  // The current conf's upstreams into the shared table again: after a
  // failed reload, or after a worker died mid-write and the table was
  // emptied (UpstreamTable::resets()).
  void republish() {
    std::string err;
    shm::UpstreamTable* table = shm::UpstreamTable::shared();
    if (table && !upstream::publishConfUpstreams(*cfg_, *table, &err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
  }

  void reap() {
    int status = 0;
    pid_t pid;
    shm::UpstreamTable* table = shm::UpstreamTable::shared();
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (table) table->processExited(pid);
      if (pid == upgrade_pid_) {
        upgradeFailed(status);
        continue;
      }
      for (size_t i = 0; i < workers_.size(); i++) {
        if (workers_[i].pid != pid) continue;
        WorkerSlot w = workers_[i];
        workers_.erase(workers_.begin() + static_cast<long>(i));
        ::close(w.channel);
        bool expected = w.retiring || quitting_ || terminating_;
        if (WIFSIGNALED(status)) {
          TG_LOG(expected ? LogLevel::kNotice : LogLevel::kAlert, "worker process %d exited on signal %d", pid,
                 WTERMSIG(status));
        } else {
          TG_LOG(expected && WEXITSTATUS(status) == 0 ? LogLevel::kNotice : LogLevel::kAlert,
                 "worker process %d exited with code %d", pid, WEXITSTATUS(status));
        }
        if (!expected && w.generation == generation_) scheduleRespawn(w);
        break;
      }
    }
    if (table && table->resets() != table_resets_) {
      table_resets_ = table->resets();
      TG_LOG(LogLevel::kAlert, "the shared upstream table was emptied after a worker died writing it; republishing");
      republish();
    }
  }

  void scheduleRespawn(const WorkerSlot& w) {
    uint64_t now = core::wallMs();
    int& deaths = quick_deaths_[w.slot];
    deaths = now - w.started_ms < kQuickDeathMs ? deaths + 1 : 0;
    uint64_t delay = 0;
    if (deaths > 1) {
      delay = 100ull << std::min(deaths - 2, 6);
      if (delay > kMaxBackoffMs) delay = kMaxBackoffMs;
      TG_LOG(LogLevel::kAlert, "worker process for slot %d keeps dying (%d times in a row), respawning in %llu ms",
             w.slot, deaths, static_cast<unsigned long long>(delay));
    }
    pending_.push_back({w.slot, now + delay});
  }

  void respawnDue() {
    uint64_t now = core::wallMs();
    for (size_t i = 0; i < pending_.size();) {
      if (pending_[i].second <= now) {
        int slot = pending_[i].first;
        pending_.erase(pending_.begin() + static_cast<long>(i));
        spawn(slot);
      } else {
        i++;
      }
    }
  }

  void quitAll() {
    pending_.clear();
    for (auto& w : workers_) {
      w.retiring = true;
      send(w, 'q');
    }
    listeners_.closeAll();
  }

  void terminateAll() {
    pending_.clear();
    terminate_deadline_ms_ = core::wallMs() + kTerminateGraceMs;
    for (auto& w : workers_) {
      w.retiring = true;
      send(w, 't');
    }
    listeners_.closeAll();
  }

  void killAll() {
    for (auto& w : workers_) kill(w.pid, SIGKILL);
    terminate_deadline_ms_ = core::wallMs() + kTerminateGraceMs;
  }

  void reopen() {
    std::string err;
    if (!core::ErrorLog::reopen(&err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
    TG_LOG(LogLevel::kNotice, "reopening logs");
    for (const auto& w : workers_) send(w, 'r');
  }

  // USR2: start the binary named by argv[0] (possibly a new file at that
  // path) with our listening sockets; both masters serve until the old
  // one gets QUIT. The pid file moves aside to "<pid>.oldbin", as nginx's.
  void upgrade() {
    if (upgrade_pid_ > 0) {
      TG_LOG(LogLevel::kAlert, "binary upgrade already in progress (new master %d)", upgrade_pid_);
      return;
    }
    TG_LOG(LogLevel::kNotice, "signal 12 (SIGUSR2) received, starting a new binary");
    if (!cfg_->pid_file.empty() && rename(cfg_->pid_file.c_str(), oldbinPath().c_str()) != 0) {
      TG_LOG(LogLevel::kAlert, "rename() \"%s\" failed (%d: %s), binary upgrade cancelled", cfg_->pid_file.c_str(),
             errno, strerror(errno));
      return;
    }
    std::string spec = listeners_.inheritSpec();
    pid_t pid = fork();
    if (pid < 0) {
      TG_LOG(LogLevel::kAlert, "fork() failed (%d: %s), binary upgrade cancelled", errno, strerror(errno));
      restorePidFile();
      return;
    }
    if (pid == 0) {
      resetSignalsInChild({});
      listeners_.clearCloexec();
      setenv(ListenerSet::kInheritEnv, spec.c_str(), 1);
      char** argv = savedArgv();
      execv(argv[0], argv);
      _exit(127);
    }
    upgrade_pid_ = pid;
    TG_LOG(LogLevel::kNotice, "new binary started as process %d", pid);
  }

  void upgradeFailed(int status) {
    TG_LOG(LogLevel::kAlert, "new binary %d exited with code %d, this master keeps serving", upgrade_pid_,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    upgrade_pid_ = -1;
    restorePidFile();
  }

  std::string oldbinPath() const { return cfg_->pid_file + ".oldbin"; }

  void restorePidFile() {
    if (!cfg_->pid_file.empty()) rename(oldbinPath().c_str(), cfg_->pid_file.c_str());
  }

  void reload() {
    TG_LOG(LogLevel::kNotice, "signal 1 (SIGHUP) received, reconfiguring");
    auto fail = [&](const std::string& why) {
      TG_LOG(LogLevel::kEmerg, "%s", why.c_str());
      TG_LOG(LogLevel::kAlert, "reconfiguration failed, the old configuration keeps serving");
      republish();  // the new conf's upstreams may be in the table already
    };
    conf::ConfigPtr next;
    conf::ConfError cerr;
    if (!conf::loadConfig(opts_, &next, &cerr)) return fail(cerr.message());
    std::string err;
    if (!http::AccessLog::check(*next, &err)) return fail(err);
    std::shared_ptr<lua::Vm> next_vm = prepareLua(next, &err);
    if (!next_vm) return fail(err);
    if (!listeners_.open(*next, &err)) {
      listeners_.prune(*cfg_);  // drop what this attempt bound
      return fail(err);
    }
    core::LogLevel level;
    if (core::parseLogLevel(next->error_log_level, &level)) {
      if (!core::ErrorLog::open(errorLogPath(*next, opts_), level, &err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
    }
    if (next->pid_file != cfg_->pid_file) {
      if (!next->pid_file.empty() && !writePidFile(next->pid_file, getpid(), &err)) TG_LOG(LogLevel::kAlert, "%s", err.c_str());
      if (!cfg_->pid_file.empty()) removePidFile(cfg_->pid_file, getpid());
    }
    cfg_ = next;
    vm_ = next_vm;  // workers still running keep their own copy of the old one
    generation_++;
    pending_.clear();
    // New workers first: they accept on the same sockets while the old drain.
    for (auto& w : workers_) w.retiring = true;
    std::vector<WorkerSlot> old = workers_;
    for (int i = 0; i < cfg_->worker_processes; i++) spawn(i);
    for (const auto& w : old) send(w, 'q');
    listeners_.prune(*cfg_);
  }

  conf::ConfigPtr cfg_;
  std::shared_ptr<lua::Vm> vm_;
  conf::LoadOptions opts_;
  ListenerSet& listeners_;
  std::vector<WorkerSlot> workers_;
  std::vector<std::pair<int, uint64_t>> pending_;  // slot, respawn time
  std::map<int, int> quick_deaths_;
  sigset_t wait_mask_;
  uint64_t generation_ = 0;
  uint64_t terminate_deadline_ms_ = 0;
  bool quitting_ = false;
  bool terminating_ = false;
  pid_t upgrade_pid_ = -1;
  uint64_t table_resets_ = 0;
};

}  // namespace

std::string errorLogPath(const conf::Config& cfg, const conf::LoadOptions& opts) {
  return cfg.error_log_set || opts.error_log.empty() ? cfg.error_log : opts.error_log;
}

namespace {
char** g_argv = nullptr;
}  // namespace

void saveArgv(char** argv) { g_argv = argv; }
char** savedArgv() { return g_argv; }

std::shared_ptr<lua::Vm> prepareLua(conf::ConfigPtr cfg, std::string* err) {
  // The conf's upstreams are in the shared table before any Lua runs
  // (init_by_lua* may read them) and before workers are forked.
  shm::UpstreamTable* table = shm::UpstreamTable::shared();
  if (!table) {
    *err = "cannot map the shared upstream table";
    return nullptr;
  }
  if (!upstream::publishConfUpstreams(*cfg, *table, err)) return nullptr;
  // Then what the admin API changed, which wins over the conf.
  if (!admin::StateStore(cfg->http.admin.state_dir).loadUpstreams(*table, &cfg->http.variables, err)) return nullptr;
  // The TLS session cache and ticket key zones, beside the lua_shared_dict
  // ones (Vm::create) in the mapping workers inherit.
  if (!tls::ensureSessionZones(*cfg, err)) return nullptr;
  std::string why;
  std::shared_ptr<lua::Vm> vm = lua::Vm::create(cfg, &why);
  if (vm && !vm->run(cfg->http.lua.init, lua::Phase::kInit, &why)) vm.reset();
  if (!vm) *err = "init_by_lua error: " + why;
  return vm;
}

int runMaster(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, const conf::LoadOptions& opts,
              ListenerSet* listeners) {
  Master m(std::move(cfg), std::move(vm), opts, listeners);
  return m.run();
}

int runSingle(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, ListenerSet* listeners) {
  std::string err;
  if (!cfg->pid_file.empty() && !writePidFile(cfg->pid_file, getpid(), &err)) {
    TG_LOG(LogLevel::kEmerg, "%s", err.c_str());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGUSR2, SIG_IGN);  // a binary upgrade needs a master
  int rc = runWorker(cfg, std::move(vm), listeners->fdsFor(*cfg, 0), -1, 0);
  if (!cfg->pid_file.empty()) removePidFile(cfg->pid_file, getpid());
  return rc;
}

}  // namespace tidegate::process
