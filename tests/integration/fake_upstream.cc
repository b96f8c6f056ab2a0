#include "fake_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kForever = Clock::time_point::max();
// How long a graceful close keeps reading (so unread request bytes do not
// turn the close into an RST) before it gives up on the peer.
constexpr Ms kLingerDrain(2000);
constexpr size_t kMaxHead = 1u << 20;
constexpr size_t kIoChunk = 64u << 10;

bool iequals(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// "Name: value" lines of a head (after its first line), CRLF-separated.
HeaderList parseHeaderLines(const std::string& text) {
  HeaderList out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find("\r\n", pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 2;
    size_t colon = line.find(':');
    if (colon != std::string::npos) out.emplace_back(line.substr(0, colon), trim(line.substr(colon + 1)));
  }
  return out;
}

void wakeFd(int fd) {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof(one));
}

void drainFd(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd, &v, sizeof(v));
}

// SO_LINGER {1, 0}: close() sends RST instead of FIN.
void resetAndClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

}  // namespace

// --- RecordedRequest ---------------------------------------------------------------

std::string RecordedRequest::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return "";
}

bool RecordedRequest::hasHeader(const std::string& name) const { return headerCount(name) > 0; }

size_t RecordedRequest::headerCount(const std::string& name) const {
  return static_cast<size_t>(
      std::count_if(headers.begin(), headers.end(), [&](const auto& h) { return iequals(h.first, name); }));
}

// --- Behaviour ------------------------------------------------------------------------

char generatedByte(size_t offset) { return static_cast<char>('a' + offset % 26); }

std::string badFramingBytes(BadFraming kind) {
  const std::string ok = "HTTP/1.1 200 OK\r\n";
  switch (kind) {
    case BadFraming::kContentLengthAndChunked:
      return ok + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    case BadFraming::kTwoContentLengths:
      return ok + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    case BadFraming::kInvalidChunkSize:
      return ok + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    case BadFraming::kUnknownTransferEncoding:
      return ok + "Transfer-Encoding: gzip\r\n\r\nhello";
    case BadFraming::kObsFold:
      return ok + "X-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello";
    case BadFraming::kBareLf:
      return "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello";
    case BadFraming::kNotHttp:
      return "garbage\r\n\r\n";
    case BadFraming::kHttp09:
      return "<html>hello</html>\n";
    case BadFraming::kUnrequested101:
      return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    case BadFraming::kExcessBody:
      return ok + "Content-Length: 5\r\n\r\nhelloEXTRA";
    case BadFraming::kBodyOn204:
      return "HTTP/1.1 204 No Content\r\n\r\nhello";
    case BadFraming::kOversizedHead:
      return ok + "X-Big: " + std::string(64u << 10, 'a') + "\r\nContent-Length: 5\r\n\r\nhello";
  }
  return "";
}

Behaviour Behaviour::respond(int status, std::string body, HeaderList headers) {
  Behaviour b;
  b.status = status;
  b.reason = status == 200 ? "OK" : "Status";
  b.body = std::move(body);
  b.headers = std::move(headers);
  return b;
}

Behaviour Behaviour::chunked(std::string body, size_t chunk_size) {
  Behaviour b = respond(200, std::move(body));
  b.framing = Framing::kChunked;
  b.chunk_size = chunk_size;
  return b;
}

Behaviour Behaviour::closing(int status, std::string body) {
  Behaviour b = respond(status, std::move(body));
  b.keepalive = false;
  return b;
}

Behaviour Behaviour::slow(Ms delay, std::string body) {
  Behaviour b = respond(200, std::move(body));
  b.delay = delay;
  return b;
}

Behaviour Behaviour::largeBody(size_t bytes, Framing framing) {
  Behaviour b = respond(200, "");
  b.generated_body = bytes;
  b.framing = framing;
  b.chunk_size = framing == Framing::kChunked ? kIoChunk : 0;
  return b;
}

Behaviour Behaviour::idleCloseAfter(Ms idle, std::string body) {
  Behaviour b = respond(200, std::move(body));
  b.idle_close = idle;
  return b;
}

namespace {
Behaviour faulty(Fault f, std::string body = "ok", size_t sent = 0) {
  Behaviour b;
  b.fault = f;
  b.body = std::move(body);
  b.sent_before_fault = sent;
  return b;
}
}  // namespace

Behaviour Behaviour::stallOnAccept() { return faulty(Fault::kStallOnAccept); }
Behaviour Behaviour::resetOnAccept() { return faulty(Fault::kResetOnAccept); }
Behaviour Behaviour::resetAfterRequest() { return faulty(Fault::kResetAfterRequest); }
Behaviour Behaviour::truncatedBody(std::string body, size_t sent) {
  return faulty(Fault::kTruncatedBody, std::move(body), sent);
}
Behaviour Behaviour::truncatedChunked(std::string body, size_t sent) {
  return faulty(Fault::kTruncatedChunked, std::move(body), sent);
}
Behaviour Behaviour::stallMidBody(std::string body, size_t sent) {
  return faulty(Fault::kStallMidBody, std::move(body), sent);
}
Behaviour Behaviour::earlyResponse(int status, std::string body) {
  Behaviour b = faulty(Fault::kEarlyResponse, std::move(body));
  b.status = status;
  b.reason = "Early";
  b.keepalive = false;
  return b;
}
Behaviour Behaviour::resetDuringUpload(size_t after_bytes) {
  Behaviour b = faulty(Fault::kResetDuringUpload);
  b.upload_bytes = after_bytes;
  return b;
}
Behaviour Behaviour::rawBytes(std::string bytes) {
  Behaviour b = faulty(Fault::kRaw);
  b.raw = std::move(bytes);
  return b;
}
Behaviour Behaviour::upgradeEcho() { return faulty(Fault::kUpgradeEcho); }

// --- RefusingPort ---------------------------------------------------------------------

RefusingPort::RefusingPort() {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0 &&
      getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port_ = ntohs(a.sin_port);
  }
}

RefusingPort::~RefusingPort() {
  if (fd_ >= 0) ::close(fd_);
}

// --- one connection --------------------------------------------------------------------

struct FakeUpstream::Conn {
  int fd = -1;
  int wake = -1;  // eventfd: the server's commands and stop
  int id = 0;
  uint64_t release_base = 0;
  uint64_t idle_base = 0;
  std::thread thread;
  bool done = false;  // guarded by mu_
  ~Conn() {
    if (wake >= 0) ::close(wake);
  }
};

// Serves one connection in its own thread: request cycles until the peer
// closes, a behaviour ends the connection, or the server stops. Owns the
// socket and closes (or resets) it before returning.
class FakeUpstream::Session {
 public:
  Session(FakeUpstream* up, Conn* c) : up_(up), c_(c), fd_(c->fd) {}
  void run();

 private:
  // kContinue: serve the next request; kClosed: the peer closed first.
  enum class End { kContinue, kGraceful, kReset, kClosed };
  enum class Wait { kReady, kWoken, kTimeout };

  Wait waitFd(short events, Clock::time_point deadline);
  bool stopping();
  bool releasedSince(uint64_t base);
  uint64_t releaseGen();
  bool idleCloseRequested();
  bool pause(Clock::time_point until, uint64_t release_base, bool until_release);
  bool fill(Clock::time_point deadline, bool idle);
  bool sendAll(const std::string& bytes, bool is_body = false);
  End serveOne(int index);
  bool readHead(RecordedRequest* r, Clock::time_point idle_deadline);
  bool take(size_t n, std::string* out);
  bool readLine(std::string* out);
  void appendBody(RecordedRequest* r, const std::string& data);
  void readBody(RecordedRequest* r, size_t budget);
  void readChunked(RecordedRequest* r, size_t budget);
  End act(const Behaviour& b, const RecordedRequest& r);
  bool sendHead(const Behaviour& b, bool keepalive);
  bool sendBody(const Behaviour& b, size_t from, size_t to);
  bool sendLastChunk(const Behaviour& b);
  End respond(const Behaviour& b, const RecordedRequest& r);
  End echo(const RecordedRequest& r);
  void finish(End how);

  FakeUpstream* up_;
  Conn* c_;
  int fd_;
  std::string buf_;
  bool eof_ = false;
  Ms idle_close_{-1};
};

FakeUpstream::Session::Wait FakeUpstream::Session::waitFd(short events, Clock::time_point deadline) {
  pollfd p[2] = {{fd_, events, 0}, {c_->wake, POLLIN, 0}};
  int timeout = -1;
  if (deadline != kForever) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    timeout = static_cast<int>(std::max<long long>(0, left));
  }
  int rc = poll(p, 2, timeout);
  if (rc == 0) return Wait::kTimeout;
  if (rc < 0) return errno == EINTR ? Wait::kWoken : Wait::kTimeout;
  if (p[1].revents) {
    drainFd(c_->wake);
    return Wait::kWoken;
  }
  return Wait::kReady;
}

bool FakeUpstream::Session::stopping() {
  std::lock_guard<std::mutex> lock(up_->mu_);
  return up_->stopping_;
}

bool FakeUpstream::Session::releasedSince(uint64_t base) {
  std::lock_guard<std::mutex> lock(up_->mu_);
  return up_->stopping_ || up_->release_gen_ > base;
}

uint64_t FakeUpstream::Session::releaseGen() {
  std::lock_guard<std::mutex> lock(up_->mu_);
  return up_->release_gen_;
}

bool FakeUpstream::Session::idleCloseRequested() {
  std::lock_guard<std::mutex> lock(up_->mu_);
  return up_->idle_close_gen_ > c_->idle_base;
}

// Waits until `until`, or (with `until_release`) until release(). False if
// the server is stopping.
bool FakeUpstream::Session::pause(Clock::time_point until, uint64_t release_base, bool until_release) {
  for (;;) {
    if (stopping()) return false;
    if (until_release && releasedSince(release_base)) return true;
    pollfd p{c_->wake, POLLIN, 0};
    int timeout = -1;
    if (until != kForever) {
      auto left = std::chrono::duration_cast<Ms>(until - Clock::now()).count();
      if (left <= 0) return true;
      timeout = static_cast<int>(left);
    }
    if (poll(&p, 1, timeout) > 0) drainFd(c_->wake);
  }
}

// Reads more into buf_. False on EOF, error, stop, deadline, or (when
// `idle`, i.e. waiting for a next request) an idle close.
bool FakeUpstream::Session::fill(Clock::time_point deadline, bool idle) {
  for (;;) {
    if (stopping() || eof_) return false;
    if (idle && buf_.empty() && idleCloseRequested()) return false;
    Wait w = waitFd(POLLIN, deadline);
    if (w == Wait::kTimeout) return false;
    if (w == Wait::kWoken) continue;
    char tmp[kIoChunk];
    ssize_t n = recv(fd_, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    eof_ = true;
    return false;
  }
}

bool FakeUpstream::Session::sendAll(const std::string& bytes, bool is_body) {
  size_t off = 0;
  while (off < bytes.size()) {
    if (stopping()) return false;
    ssize_t n = send(fd_, bytes.data() + off, bytes.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      if (is_body) up_->body_bytes_sent_ += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      waitFd(POLLOUT, kForever);
      continue;
    }
    return false;
  }
  return true;
}

bool FakeUpstream::Session::readHead(RecordedRequest* r, Clock::time_point idle_deadline) {
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > kMaxHead) return false;
    if (!fill(buf_.empty() ? idle_deadline : kForever, buf_.empty())) return false;
  }
  r->raw_head = buf_.substr(0, end + 4);
  buf_.erase(0, end + 4);
  size_t eol = r->raw_head.find("\r\n");
  std::string line = r->raw_head.substr(0, eol);
  size_t s1 = line.find(' '), s2 = line.rfind(' ');
  if (s1 == std::string::npos || s2 == s1) return false;
  r->method = line.substr(0, s1);
  r->target = line.substr(s1 + 1, s2 - s1 - 1);
  r->version = line.substr(s2 + 1);
  r->headers = parseHeaderLines(r->raw_head.substr(eol + 2, end - eol - 2));
  return true;
}

bool FakeUpstream::Session::take(size_t n, std::string* out) {
  while (buf_.size() < n) {
    if (!fill(kForever, false)) return false;
  }
  out->assign(buf_, 0, n);
  buf_.erase(0, n);
  return true;
}

bool FakeUpstream::Session::readLine(std::string* out) {
  size_t eol;
  while ((eol = buf_.find("\r\n")) == std::string::npos) {
    if (buf_.size() > kMaxHead || !fill(kForever, false)) return false;
  }
  out->assign(buf_, 0, eol);
  buf_.erase(0, eol + 2);
  return true;
}

void FakeUpstream::Session::appendBody(RecordedRequest* r, const std::string& data) {
  r->body_bytes += data.size();
  if (r->body.size() < kMaxRecordedBody) r->body.append(data, 0, kMaxRecordedBody - r->body.size());
}

// Reads at most `budget` decoded body bytes.
void FakeUpstream::Session::readBody(RecordedRequest* r, size_t budget) {
  std::string te = r->header("Transfer-Encoding");
  if (!te.empty()) {
    r->chunked = true;
    readChunked(r, budget);
    return;
  }
  size_t declared = std::strtoull(r->header("Content-Length").c_str(), nullptr, 10);
  size_t want = std::min(declared, budget);
  std::string piece;
  while (r->body_bytes < want) {
    size_t n = std::min(want - r->body_bytes, kIoChunk);
    if (buf_.empty() && !fill(kForever, false)) return;
    if (!take(std::min(n, buf_.size()), &piece)) return;
    appendBody(r, piece);
  }
  r->body_complete = r->body_bytes == declared;
}

// RFC 9112 section 7.1: size [; ext] CRLF data CRLF ... 0 CRLF trailers CRLF.
void FakeUpstream::Session::readChunked(RecordedRequest* r, size_t budget) {
  std::string line, data;
  for (;;) {
    if (!readLine(&line)) return;
    char* end = nullptr;
    size_t size = std::strtoull(line.c_str(), &end, 16);
    if (end == line.c_str()) return;
    if (size == 0) break;
    size_t want = std::min(size, budget - r->body_bytes);
    if (!take(want, &data)) return;
    appendBody(r, data);
    if (want < size || !take(2, &data)) return;
  }
  while (readLine(&line) && !line.empty()) {
    HeaderList field = parseHeaderLines(line);
    r->trailers.insert(r->trailers.end(), field.begin(), field.end());
  }
  r->body_complete = true;
}

bool FakeUpstream::Session::sendHead(const Behaviour& b, bool keepalive) {
  std::string head = "HTTP/1.1 " + std::to_string(b.status) + " " + b.reason + "\r\n";
  if (b.framing == Framing::kContentLength) head += "Content-Length: " + std::to_string(b.bodySize()) + "\r\n";
  if (b.framing == Framing::kChunked) head += "Transfer-Encoding: chunked\r\n";
  for (const auto& [k, v] : b.headers) head += k + ": " + v + "\r\n";
  if (!keepalive) head += "Connection: close\r\n";
  return sendAll(head + "\r\n");
}

// Body bytes [from, to), framed; chunk boundaries count from `from`.
bool FakeUpstream::Session::sendBody(const Behaviour& b, size_t from, size_t to) {
  size_t step = b.framing == Framing::kChunked && b.chunk_size > 0 ? b.chunk_size : kIoChunk;
  if (b.framing == Framing::kChunked && b.chunk_size == 0) step = std::max<size_t>(to - from, 1);
  std::string piece;
  for (size_t off = from; off < to; off += step) {
    size_t n = std::min(step, to - off);
    if (b.generated_body > 0) {
      piece.resize(n);
      for (size_t i = 0; i < n; i++) piece[i] = generatedByte(off + i);
    } else {
      piece.assign(b.body, off, n);
    }
    if (b.framing == Framing::kChunked) {
      char size[32];
      snprintf(size, sizeof(size), "%zx\r\n", n);
      if (!sendAll(size)) return false;
      if (!sendAll(piece, true) || !sendAll("\r\n")) return false;
    } else if (!sendAll(piece, true)) {
      return false;
    }
  }
  return true;
}

bool FakeUpstream::Session::sendLastChunk(const Behaviour& b) {
  return b.framing != Framing::kChunked || sendAll("0\r\n\r\n");
}

FakeUpstream::Session::End FakeUpstream::Session::respond(const Behaviour& b, const RecordedRequest& r) {
  bool keepalive = b.keepalive && b.framing != Framing::kCloseDelimited && b.fault != Fault::kTruncatedBody &&
                   b.fault != Fault::kTruncatedChunked;
  Behaviour framed = b;
  if (b.fault == Fault::kTruncatedChunked) framed.framing = Framing::kChunked;
  if (b.fault == Fault::kTruncatedBody) framed.framing = Framing::kContentLength;
  if (b.delay.count() > 0 && !pause(Clock::now() + b.delay, 0, false)) return End::kGraceful;
  {
    // Commands issued from here on concern the next request cycle.
    std::lock_guard<std::mutex> lock(up_->mu_);
    c_->idle_base = up_->idle_close_gen_;
    c_->release_base = up_->release_gen_;
  }
  if (!sendHead(framed, keepalive)) return End::kGraceful;
  if (r.method == "HEAD") return keepalive ? End::kContinue : End::kGraceful;
  size_t total = framed.bodySize();
  size_t cut = std::min(b.sent_before_fault, total);
  switch (b.fault) {
    case Fault::kTruncatedBody:
    case Fault::kTruncatedChunked:
      sendBody(framed, 0, cut);
      return End::kGraceful;
    case Fault::kStallMidBody: {
      uint64_t base = releaseGen();
      if (!sendBody(framed, 0, cut) || !pause(kForever, base, true)) return End::kGraceful;
      if (!sendBody(framed, cut, total) || !sendLastChunk(framed)) return End::kGraceful;
      break;
    }
    default:
      if (!sendBody(framed, 0, total) || !sendLastChunk(framed)) return End::kGraceful;
  }
  idle_close_ = b.idle_close;
  return keepalive ? End::kContinue : End::kGraceful;
}

FakeUpstream::Session::End FakeUpstream::Session::echo(const RecordedRequest& r) {
  std::string proto = r.header("Upgrade").empty() ? "websocket" : r.header("Upgrade");
  if (!sendAll("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n\r\n")) {
    return End::kGraceful;
  }
  for (;;) {
    if (!buf_.empty()) {
      std::string out;
      out.swap(buf_);
      if (!sendAll(out)) return End::kGraceful;
    }
    if (!fill(kForever, false)) return End::kGraceful;
  }
}

FakeUpstream::Session::End FakeUpstream::Session::act(const Behaviour& b, const RecordedRequest& r) {
  switch (b.fault) {
    case Fault::kStallOnAccept:
      pause(kForever, c_->release_base, true);
      return End::kGraceful;
    case Fault::kResetOnAccept:
    case Fault::kResetAfterRequest:
    case Fault::kResetDuringUpload:
      return End::kReset;
    case Fault::kRaw:
      sendAll(b.raw);
      return End::kGraceful;
    case Fault::kUpgradeEcho:
      return echo(r);
    default:
      return respond(b, r);
  }
}

// One request cycle: pick a behaviour, read what it wants read, record, act.
FakeUpstream::Session::End FakeUpstream::Session::serveOne(int index) {
  bool found = false;
  Behaviour pre = up_->pickPreRead(&found);
  RecordedRequest r;
  if (found) return act(pre, r);
  auto idle_deadline = idle_close_.count() >= 0 ? Clock::now() + idle_close_ : kForever;
  if (!readHead(&r, idle_deadline)) return eof_ ? End::kClosed : End::kGraceful;
  r.connection = c_->id;
  r.index_on_connection = index;
  Behaviour b = up_->pick(r);
  if (b.fault == Fault::kResetDuringUpload) readBody(&r, b.upload_bytes);
  else if (b.fault != Fault::kEarlyResponse && b.fault != Fault::kStallOnAccept) readBody(&r, SIZE_MAX);
  bool whole = r.body_complete || (r.body_bytes == 0 && !r.chunked && r.header("Content-Length").empty());
  up_->record(r);
  if (!whole && b.fault == Fault::kNone) return End::kGraceful;  // the peer went away mid-body
  return act(b, r);
}

void FakeUpstream::Session::run() {
  End end = End::kContinue;
  for (int index = 1; end == End::kContinue; index++) end = serveOne(index);
  finish(end);
}

// Graceful: FIN, then read and drop what the peer still sends, so that
// unread request bytes do not make the kernel answer with an RST.
void FakeUpstream::Session::finish(End how) {
  if (how == End::kReset) {
    resetAndClose(fd_);
    return;
  }
  if (how == End::kGraceful && !eof_) {
    shutdown(fd_, SHUT_WR);
    auto deadline = Clock::now() + kLingerDrain;
    while (fill(deadline, false)) buf_.clear();
  }
  ::close(fd_);
}

// --- FakeUpstream ---------------------------------------------------------------------

FakeUpstream::FakeUpstream() {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len);
  listen(listen_fd_, 128);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  accept_wake_ = eventfd(0, EFD_CLOEXEC);
  acceptor_ = std::thread([this] { acceptLoop(); });
}

FakeUpstream::~FakeUpstream() {
  stopListening();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wakeAll();
  std::list<std::unique_ptr<Conn>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) c->thread.join();
}

void FakeUpstream::stopListening() {
  if (!acceptor_.joinable()) return;
  wakeFd(accept_wake_);
  acceptor_.join();
  ::close(listen_fd_);
  ::close(accept_wake_);
  listen_fd_ = accept_wake_ = -1;
}

void FakeUpstream::acceptLoop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {accept_wake_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents) return;
    if (!p[0].revents) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      // A head and body written separately must not wait for a delayed ACK.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (fd < 0) continue;
    reapFinished();
    startConn(fd);
  }
}

void FakeUpstream::startConn(int fd) {
  auto c = std::make_unique<Conn>();
  c->fd = fd;
  c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  Conn* raw = c.get();
  {
    // Counters change under mu_ so that the waits on cv_ cannot miss them.
    std::lock_guard<std::mutex> lock(mu_);
    raw->id = accepted_.load() + 1;
    raw->release_base = release_gen_;
    raw->idle_base = idle_close_gen_;
    conns_.push_back(std::move(c));
    open_++;
    accepted_++;
  }
  notify();
  raw->thread = std::thread([this, raw] {
    Session(this, raw).run();
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_--;
      raw->done = true;
    }
    notify();
  });
}

void FakeUpstream::reapFinished() {
  std::list<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      auto next = std::next(it);
      if ((*it)->done) finished.splice(finished.end(), conns_, it);
      it = next;
    }
  }
  for (auto& c : finished) c->thread.join();
}

void FakeUpstream::wakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : conns_) wakeFd(c->wake);
}

void FakeUpstream::setDefault(Behaviour b) {
  std::lock_guard<std::mutex> lock(mu_);
  default_ = std::move(b);
}

void FakeUpstream::enqueue(Behaviour b) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(b));
}

void FakeUpstream::setHandler(Handler h) {
  std::lock_guard<std::mutex> lock(mu_);
  handler_ = std::move(h);
}

size_t FakeUpstream::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void FakeUpstream::release() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    release_gen_++;
  }
  wakeAll();
}

void FakeUpstream::closeIdleConnections() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_close_gen_++;
  }
  wakeAll();
}

static bool isPreRead(const Behaviour& b) {
  return b.fault == Fault::kStallOnAccept || b.fault == Fault::kResetOnAccept;
}

Behaviour FakeUpstream::pickPreRead(bool* found) {
  std::lock_guard<std::mutex> lock(mu_);
  *found = false;
  if (!queue_.empty() && isPreRead(queue_.front())) {
    *found = true;
    Behaviour b = std::move(queue_.front());
    queue_.pop_front();
    return b;
  }
  *found = queue_.empty() && !handler_ && isPreRead(default_);
  return *found ? default_ : Behaviour{};
}

Behaviour FakeUpstream::pick(const RecordedRequest& head) {
  Handler h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!queue_.empty()) {
      Behaviour b = std::move(queue_.front());
      queue_.pop_front();
      return b;
    }
    if (!handler_) return default_;
    h = handler_;
  }
  return h(head);
}

void FakeUpstream::record(const RecordedRequest& r) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(r);
  }
  notify();
}

void FakeUpstream::notify() { cv_.notify_all(); }

std::vector<RecordedRequest> FakeUpstream::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

size_t FakeUpstream::requestCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_.size();
}

bool FakeUpstream::waitForRequests(size_t n, Ms timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

bool FakeUpstream::waitForConnections(int n, Ms timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return accepted_.load() >= n; });
}

bool FakeUpstream::waitForOpenConnections(int n, Ms timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return open_.load() == n; });
}

int FakeUpstream::requestsOnConnection(int id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(
      std::count_if(requests_.begin(), requests_.end(), [&](const auto& r) { return r.connection == id; }));
}

}  // namespace tidegate::test
