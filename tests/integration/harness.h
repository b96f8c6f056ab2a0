// The integration harness: starts the real tidegate binary on a generated
// conf in a temp prefix, on free loopback ports, talks raw bytes to it,
// reads its logs, signals it and stops everything it started. Later
// features reuse it (fake upstreams, admin API clients...).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tidegate::test {

using Ms = std::chrono::milliseconds;

// Polls `cond` every few milliseconds until it holds or `timeout` passes.
bool waitFor(const std::function<bool()>& cond, Ms timeout = Ms(10000));

// Connects to 127.0.0.1:port once: 0 on success, else connect()'s errno.
int connectErrno(int port);

// A port on 127.0.0.1 that was free a moment ago, below the kernel's
// ephemeral range (so no client connection takes it meanwhile).
int freePort();

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  void write(const std::string& rel, const std::string& content) const;
  std::string read(const std::string& rel) const;
  bool exists(const std::string& rel) const;

 private:
  std::string path_;
};

// The result of running the binary to completion (tidegate -t, -s, -v).
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
RunResult runTidegate(const std::vector<std::string>& args, Ms timeout = Ms(10000));
std::string tidegateBinary();

// A response as read off the wire.
struct Response {
  int status = 0;
  std::string status_line;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  bool complete = false;  // framing fully read (Content-Length / chunked / close)
  std::string header(const std::string& lower_name) const;
  bool hasHeader(const std::string& lower_name) const;
};

class RawClient {
 public:
  RawClient() = default;
  explicit RawClient(int port) { connect(port); }
  virtual ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connect(int port, Ms timeout = Ms(5000)) { return connect("127.0.0.1", port, timeout); }
  bool connect(const std::string& ip, int port, Ms timeout = Ms(5000));
  bool send(const std::string& bytes);
  // Reads one response. `head_request`: no body follows (HEAD).
  Response readResponse(Ms timeout = Ms(5000), bool head_request = false);
  // Reads whatever arrives until the peer closes or `timeout` passes.
  std::string readUntilClose(Ms timeout = Ms(5000));
  // Raw protocols: the bytes up to and including the first `needle`, or the
  // first `n` bytes; whatever came if they do not within `timeout`.
  std::string readUntil(const std::string& needle, Ms timeout = Ms(5000));
  std::string readBytes(size_t n, Ms timeout = Ms(5000));
  // True if the peer closes (EOF or reset) within `timeout`; data read is discarded.
  bool waitClosed(Ms timeout = Ms(5000));
  virtual void close();
  int fd() const { return fd_; }

 protected:
  // The byte stream under the HTTP framing (TlsConn puts TLS there): reads
  // what arrives within `timeout` into `buf` (0: EOF or error, -1: timeout),
  // and writes all of `bytes`.
  virtual ssize_t receiveSome(char* buf, size_t len, Ms timeout);
  virtual bool sendAll(const std::string& bytes);

  int fd_ = -1;

 private:
  bool fill(Ms timeout);  // reads more into buf_; false on EOF/timeout
  // Fills until buf_ holds `want(buf_)` bytes (npos: not yet); takes them.
  std::string take(const std::function<size_t(const std::string&)>& want, Ms timeout);
  std::string buf_;
  bool eof_ = false;
};

// One request on a fresh connection; returns the response.
Response httpGet(int port, const std::string& path, const std::string& host = "localhost");

class Gateway {
 public:
  Gateway();
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Conf text: "{PORT}", "{PORT2}", "{PREFIX}" are replaced. If the text has
  // no main-level `daemon`/`error_log`/`pid`, defaults are added (foreground,
  // master on, error log at info in logs/error.log).
  void setConf(const std::string& conf);
  // A standard conf with one server on {PORT} and the given http-level and
  // server-level text.
  // `listen_extra`: parameters after the listen address (" reuseport").
  void setSimpleConf(const std::string& server_body, const std::string& http_extra = "",
                     int workers = 1, const std::string& main_extra = "", const std::string& listen_extra = "");
  std::string renderConf(const std::string& conf) const;

  // Starts the binary and waits until every port accepts connections.
  bool start(Ms timeout = Ms(10000));
  // SIGQUIT, wait; SIGKILL after `timeout`. Returns the exit status.
  int stop(Ms timeout = Ms(10000));
  int stopWith(int sig, Ms timeout = Ms(10000));
  bool running() const;
  // Waits for the master to exit on its own; returns its exit status or -1.
  int waitExit(Ms timeout);

  pid_t masterPid() const { return pid_; }
  std::vector<pid_t> workerPids() const;
  // Waits until none of `old` is a worker any more and `count` workers run
  // (a reload's new generation took over and the old one drained).
  bool waitWorkersReplaced(const std::vector<pid_t>& old, size_t count, Ms timeout = Ms(10000)) const;
  void signal(int sig) const;

  int port() const { return port_; }
  int port2() const { return port2_; }
  const TempDir& prefix() const { return dir_; }
  std::string path(const std::string& rel) const { return dir_.path() + "/" + rel; }
  std::string errorLog() const;
  std::string accessLog() const;
  std::string stderrText() const;
  // Waits until the error log contains `needle`.
  bool waitLog(const std::string& needle, Ms timeout = Ms(10000)) const;
  // Lines of the error log at [error], [crit], [alert] or [emerg].
  std::vector<std::string> seriousLogLines() const;
  // The serious lines that contain none of `provoked` (the errors a test
  // caused on purpose, such as a cosocket's "lua tcp socket read timed out").
  std::vector<std::string> seriousLogLinesBut(const std::vector<std::string>& provoked) const;

 private:
  TempDir dir_;
  int port_;
  int port2_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
};

// All child pids of `parent` (from /proc).
std::vector<pid_t> childrenOf(pid_t parent);
// Count of open fds of a process.
int openFdCount(pid_t pid);
// The fds a worker holds at rest, counted once it has served a request on
// `port` at `path` (a worker opens its logs and more after the port already
// accepts): -1 if that request failed or the count did not settle.
int restingFdCount(pid_t worker, int port, const std::string& path);
// A field of /proc/<pid>/status in kB ("VmHWM", "VmRSS"); -1 if absent.
long procStatusKb(pid_t pid, const std::string& field);

}  // namespace tidegate::test
