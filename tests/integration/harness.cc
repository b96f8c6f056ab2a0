#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void replaceAll(std::string* s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s->find(from, pos)) != std::string::npos) {
    s->replace(pos, from.size(), to);
    pos += to.size();
  }
}

bool canConnect(int port) { return connectErrno(port) == 0; }

void removeTree(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (d) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string p = path + "/" + name;
      struct stat st;
      if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) removeTree(p);
      else unlink(p.c_str());
    }
    closedir(d);
  }
  rmdir(path.c_str());
}

std::string readWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool waitFor(const std::function<bool()>& cond, Ms timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Ms(5));  // polling interval, not synchronisation
  }
}

int connectErrno(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int err = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

namespace {

// The low end of the kernel's ephemeral port range (net.ipv4.ip_local_port_range).
int ephemeralLow() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  return in >> low ? low : 32768;
}

// Whether nothing on 127.0.0.1 uses `port` now (not even a connection in
// TIME_WAIT: no SO_REUSEADDR).
bool bindable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

// Below the ephemeral range, where the kernel takes the local ports of
// outgoing connections (and bind(0)'s): a port from there could go to some
// test's client connection between this call and the gateway's bind. At
// random, so that tests running in parallel rarely pick the same one.
int freePort() {
  static std::mt19937 rng(std::random_device{}());
  int high = ephemeralLow() - 1;
  int low = std::max(10000, high - 12000);
  for (int attempt = 0; high > low && attempt < 1000; attempt++) {
    int port = std::uniform_int_distribution<int>(low, high)(rng);
    if (bindable(port)) return port;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // no room below: bind(0)'s
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// --- TempDir ---------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tidegate-test.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = mkdtemp(buf.data());
  path_ = p ? p : "";
}

TempDir::~TempDir() {
  if (!path_.empty()) removeTree(path_);
}

void TempDir::write(const std::string& rel, const std::string& content) const {
  std::string full = path_ + "/" + rel;
  size_t slash = full.rfind('/');
  std::string dir = full.substr(0, slash);
  // mkdir -p
  for (size_t pos = path_.size() + 1; pos <= dir.size(); pos++) {
    if (pos == dir.size() || dir[pos] == '/') mkdir(dir.substr(0, pos).c_str(), 0755);
  }
  std::ofstream out(full, std::ios::binary | std::ios::trunc);
  out << content;
}

std::string TempDir::read(const std::string& rel) const { return readWhole(path_ + "/" + rel); }

bool TempDir::exists(const std::string& rel) const {
  struct stat st;
  return stat((path_ + "/" + rel).c_str(), &st) == 0;
}

// --- running the binary ---------------------------------------------------------------

std::string tidegateBinary() {
  const char* env = getenv("TIDEGATE_BINARY");
  return env && *env ? env : TIDEGATE_BINARY_PATH;
}

RunResult runTidegate(const std::vector<std::string>& args, Ms timeout) {
  TempDir tmp;
  std::string out_path = tmp.path() + "/out", err_path = tmp.path() + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<std::string> all{tidegateBinary()};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  RunResult r;
  int status = 0;
  bool done = waitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = readWhole(out_path);
  r.err = readWhole(err_path);
  return r;
}

// --- responses and the raw client ---------------------------------------------------

std::string Response::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

bool Response::hasHeader(const std::string& name) const {
  for (const auto& h : headers) {
    if (h.first == name) return true;
  }
  return false;
}

RawClient::~RawClient() { close(); }

void RawClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
  eof_ = false;
}

bool RawClient::connect(const std::string& ip, int port, Ms timeout) {
  close();
  auto deadline = Clock::now() + timeout;
  for (;;) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      int one = 1;
      setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return true;
    }
    ::close(fd_);
    fd_ = -1;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Ms(5));
  }
}

bool RawClient::send(const std::string& bytes) { return fd_ >= 0 && sendAll(bytes); }

bool RawClient::sendAll(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

ssize_t RawClient::receiveSome(char* buf, size_t len, Ms timeout) {
  pollfd p{fd_, POLLIN, 0};
  int rc = poll(&p, 1, static_cast<int>(timeout.count()));
  if (rc <= 0) return -1;
  ssize_t n = ::recv(fd_, buf, len, 0);
  return n < 0 ? 0 : n;
}

bool RawClient::fill(Ms timeout) {
  if (fd_ < 0 || eof_) return false;
  char tmp[65536];
  ssize_t n = receiveSome(tmp, sizeof(tmp), timeout);
  if (n < 0) return false;
  if (n == 0) {
    eof_ = true;
    return false;
  }
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

Response RawClient::readResponse(Ms timeout, bool head_request) {
  Response r;
  auto deadline = Clock::now() + timeout;
  auto left = [&] {
    auto d = std::chrono::duration_cast<Ms>(deadline - Clock::now());
    return d.count() > 0 ? d : Ms(0);
  };
  size_t head_end;
  for (;;) {
    // Skip interim 1xx responses.
    head_end = buf_.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      if (buf_.compare(0, 10, "HTTP/1.1 1") == 0 && buf_.compare(0, 12, "HTTP/1.1 101") != 0) {
        buf_.erase(0, head_end + 4);
        continue;
      }
      break;
    }
    if (!fill(left())) return r;
  }
  std::string head = buf_.substr(0, head_end);
  buf_.erase(0, head_end + 4);
  std::istringstream lines(head);
  std::string line;
  std::getline(lines, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  r.status_line = line;
  if (line.size() >= 12) r.status = std::atoi(line.c_str() + 9);
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    r.headers.emplace_back(lower(line.substr(0, colon)), v);
  }
  if (head_request || r.status == 204 || r.status == 304) {
    r.complete = true;
    return r;
  }
  if (r.hasHeader("content-length")) {
    size_t len = std::strtoull(r.header("content-length").c_str(), nullptr, 10);
    while (buf_.size() < len && fill(left())) {
    }
    size_t take = std::min(len, buf_.size());
    r.body = buf_.substr(0, take);
    buf_.erase(0, take);
    r.complete = take == len;
    return r;
  }
  if (lower(r.header("transfer-encoding")).find("chunked") != std::string::npos) {
    for (;;) {
      size_t eol;
      while ((eol = buf_.find("\r\n")) == std::string::npos) {
        if (!fill(left())) return r;
      }
      size_t size = std::strtoull(buf_.c_str(), nullptr, 16);
      if (size == 0) {
        while (buf_.find("\r\n\r\n") == std::string::npos && buf_.substr(eol, 4) != "\r\n\r\n") {
          if (!fill(left())) return r;
        }
        size_t end = buf_.find("\r\n\r\n");
        buf_.erase(0, end + 4);
        r.complete = true;
        return r;
      }
      while (buf_.size() < eol + 2 + size + 2) {
        if (!fill(left())) return r;
      }
      r.body += buf_.substr(eol + 2, size);
      buf_.erase(0, eol + 2 + size + 2);
    }
  }
  while (fill(left())) {
  }
  r.body = buf_;
  buf_.clear();
  r.complete = eof_;
  return r;
}

std::string RawClient::readUntilClose(Ms timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
    if (!fill(left)) break;
  }
  std::string out = buf_;
  buf_.clear();
  return out;
}

std::string RawClient::take(const std::function<size_t(const std::string&)>& want, Ms timeout) {
  auto deadline = Clock::now() + timeout;
  size_t n = want(buf_);
  while (n == std::string::npos) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
    if (left.count() <= 0 || !fill(left)) break;
    n = want(buf_);
  }
  if (n == std::string::npos) n = buf_.size();
  std::string out = buf_.substr(0, n);
  buf_.erase(0, n);
  return out;
}

std::string RawClient::readUntil(const std::string& needle, Ms timeout) {
  return take(
      [&](const std::string& b) {
        size_t at = b.find(needle);
        return at == std::string::npos ? at : at + needle.size();
      },
      timeout);
}

std::string RawClient::readBytes(size_t n, Ms timeout) {
  return take([n](const std::string& b) { return b.size() >= n ? n : std::string::npos; }, timeout);
}

bool RawClient::waitClosed(Ms timeout) {
  auto deadline = Clock::now() + timeout;
  while (!eof_) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    if (!fill(left) && !eof_) return false;
    buf_.clear();
  }
  return true;
}

Response httpGet(int port, const std::string& path, const std::string& host) {
  RawClient c;
  if (!c.connect(port)) return Response{};
  c.send("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n");
  return c.readResponse();
}

// --- Gateway ----------------------------------------------------------------------------

Gateway::Gateway() : port_(freePort()), port2_(freePort()) {
  while (port2_ == port_) port2_ = freePort();
}

Gateway::~Gateway() {
  if (running()) stop(Ms(5000));
}

std::string Gateway::renderConf(const std::string& conf) const {
  std::string text = conf;
  replaceAll(&text, "{PORT}", std::to_string(port_));
  replaceAll(&text, "{PORT2}", std::to_string(port2_));
  replaceAll(&text, "{PREFIX}", dir_.path());
  std::string head;
  if (text.find("daemon ") == std::string::npos) head += "daemon off;\n";
  if (text.find("error_log ") == std::string::npos) head += "error_log logs/error.log info;\n";
  if (text.find("pid ") == std::string::npos) head += "pid logs/tidegate.pid;\n";
  return head + text;
}

void Gateway::setConf(const std::string& conf) {
  dir_.write("conf/tidegate.conf", renderConf(conf));
  dir_.write("logs/.keep", "");
}

void Gateway::setSimpleConf(const std::string& server_body, const std::string& http_extra, int workers,
                            const std::string& main_extra, const std::string& listen_extra) {
  setConf("worker_processes " + std::to_string(workers) + ";\n" + main_extra +
          "\nevents { worker_connections 1024; }\n"
          "http {\n  access_log logs/access.log;\n" +
          http_extra + "\n  server {\n    listen 127.0.0.1:{PORT}" + listen_extra + ";\n" + server_body + "\n  }\n}\n");
}

bool Gateway::start(Ms timeout) {
  std::string err_path = path("logs/stderr.log");
  pid_ = fork();
  if (pid_ == 0) {
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(e, 1);
    dup2(e, 2);
    std::string bin = tidegateBinary();
    std::string prefix = dir_.path();
    execl(bin.c_str(), bin.c_str(), "-p", prefix.c_str(), "-c", "conf/tidegate.conf", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string conf = dir_.read("conf/tidegate.conf");
  bool uses2 = conf.find(":" + std::to_string(port2_) + ";") != std::string::npos ||
               conf.find(":" + std::to_string(port2_) + " ") != std::string::npos;
  // The master binds before it forks, so an accepted connection does not
  // mean a worker is up: wait for the configured number of workers too.
  size_t workers = 0;
  if (conf.find("master_process off") == std::string::npos) {
    workers = 1;
    size_t wp = conf.find("worker_processes ");
    if (wp != std::string::npos) {
      std::string v = conf.substr(wp + 17, conf.find(';', wp) - wp - 17);
      workers = v == "auto" ? static_cast<size_t>(sysconf(_SC_NPROCESSORS_ONLN)) : std::strtoul(v.c_str(), nullptr, 10);
    }
  }
  return waitFor(
      [&] {
        if (!running()) return false;
        return canConnect(port_) && (!uses2 || canConnect(port2_)) && childrenOf(pid_).size() >= workers;
      },
      timeout);
}

bool Gateway::running() const {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    const_cast<Gateway*>(this)->exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const_cast<Gateway*>(this)->pid_ = -1;
    return false;
  }
  return true;
}

int Gateway::waitExit(Ms timeout) {
  if (!waitFor([&] { return !running(); }, timeout)) return -1;
  return exit_status_;
}

int Gateway::stopWith(int sig, Ms timeout) {
  if (!running()) return exit_status_;
  std::vector<pid_t> workers = workerPids();
  kill(pid_, sig);
  int rc = waitExit(timeout);
  if (rc < 0) {
    for (pid_t w : workerPids()) kill(w, SIGKILL);
    kill(pid_, SIGKILL);
    rc = waitExit(Ms(5000));
  }
  // Workers are reparented when the master dies; never leave one behind.
  waitFor([&] {
    for (pid_t w : workers) {
      if (kill(w, 0) == 0) return false;
    }
    return true;
  }, Ms(5000));
  for (pid_t w : workers) kill(w, SIGKILL);
  return rc;
}

int Gateway::stop(Ms timeout) { return stopWith(SIGQUIT, timeout); }

std::vector<pid_t> Gateway::workerPids() const { return pid_ > 0 ? childrenOf(pid_) : std::vector<pid_t>{}; }

bool Gateway::waitWorkersReplaced(const std::vector<pid_t>& old, size_t count, Ms timeout) const {
  return waitFor([&] {
    std::vector<pid_t> now = workerPids();
    for (pid_t p : old) {
      if (std::find(now.begin(), now.end(), p) != now.end()) return false;
    }
    return now.size() == count;
  }, timeout);
}

void Gateway::signal(int sig) const {
  if (pid_ > 0) kill(pid_, sig);
}

std::string Gateway::errorLog() const { return dir_.read("logs/error.log"); }
std::string Gateway::accessLog() const { return dir_.read("logs/access.log"); }
std::string Gateway::stderrText() const { return dir_.read("logs/stderr.log"); }

bool Gateway::waitLog(const std::string& needle, Ms timeout) const {
  return waitFor([&] { return errorLog().find(needle) != std::string::npos; }, timeout);
}

std::vector<std::string> Gateway::seriousLogLines() const {
  std::vector<std::string> out;
  std::istringstream in(errorLog());
  std::string line;
  while (std::getline(in, line)) {
    for (const char* lvl : {"[error]", "[crit]", "[alert]", "[emerg]"}) {
      if (line.find(lvl) != std::string::npos) {
        out.push_back(line);
        break;
      }
    }
  }
  return out;
}

std::vector<std::string> Gateway::seriousLogLinesBut(const std::vector<std::string>& provoked) const {
  std::vector<std::string> out;
  for (const std::string& line : seriousLogLines()) {
    bool expected = false;
    for (const std::string& p : provoked) expected = expected || line.find(p) != std::string::npos;
    if (!expected) out.push_back(line);
  }
  return out;
}

std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    std::string stat = readWhole(std::string("/proc/") + e->d_name + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(stat.c_str() + close + 2, "%c %d", &state, &ppid) == 2 && ppid == parent && state != 'Z') {
      out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
    }
  }
  closedir(d);
  return out;
}

int restingFdCount(pid_t worker, int port, const std::string& path) {
  int resting = -1;
  {
    RawClient c(port);
    if (!c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n") || c.readResponse().status != 200) return -1;
    resting = openFdCount(worker) - 1;  // this connection's socket is the one more
  }
  return waitFor([&] { return openFdCount(worker) == resting; }) ? resting : -1;
}

long procStatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

int openFdCount(pid_t pid) {
  int n = 0;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n;
}

}  // namespace tidegate::test
