// A scriptable HTTP/1.1 backend for the proxy's integration tests: it runs
// in threads of the test process, records what it receives and answers each
// request with a Behaviour the test chose, including the upstream faults of
// RELIABILITY.md ("Upstream faults", "Upstream response framing").
//
// One acceptor thread plus one thread per connection, blocking-style code
// over poll(): simple and deterministic rather than fast. Every wait also
// polls a per-connection eventfd, so the destructor, release() and
// closeIdleConnections() wake any thread at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.h"

namespace tidegate::test {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// What the fake upstream read of one request.
struct RecordedRequest {
  std::string method;
  std::string target;
  std::string version;        // "HTTP/1.1"
  HeaderList headers;         // as sent (names keep their case), in order
  std::string raw_head;       // request line + headers + blank line, verbatim
  std::string body;           // decoded when chunked; first kMaxRecordedBody bytes
  size_t body_bytes = 0;      // decoded body bytes read (may exceed body.size())
  bool chunked = false;
  bool body_complete = false; // the whole declared body (or last chunk) was read
  HeaderList trailers;
  int connection = 0;         // 1-based, in accept order
  int index_on_connection = 0;  // 1-based

  // First value of a header, case-insensitive; "" when absent.
  std::string header(const std::string& name) const;
  bool hasHeader(const std::string& name) const;
  size_t headerCount(const std::string& name) const;
};

inline constexpr size_t kMaxRecordedBody = 16u << 20;

enum class Fault {
  kNone,               // answer normally
  kStallOnAccept,      // never read; close on release()
  kResetOnAccept,      // RST before reading anything
  kResetAfterRequest,  // read the whole request, then RST
  kTruncatedBody,      // Content-Length of the full body, send `sent_before_fault` bytes, close
  kTruncatedChunked,   // chunks covering `sent_before_fault` bytes, no last chunk, close
  kStallMidBody,       // send `sent_before_fault` bytes, wait for release(), send the rest
  kEarlyResponse,      // answer after the head without reading the body, then close
  kResetDuringUpload,  // read `upload_bytes` of the body, then RST
  kRaw,                // send `raw` verbatim (bad framing), then close
  kUpgradeEcho,        // 101 Switching Protocols, then echo every byte back until EOF
};

enum class Framing { kContentLength, kChunked, kCloseDelimited };

// Canned malformed responses (RELIABILITY.md "Upstream response framing").
enum class BadFraming {
  kContentLengthAndChunked,
  kTwoContentLengths,
  kInvalidChunkSize,
  kUnknownTransferEncoding,
  kObsFold,
  kBareLf,
  kNotHttp,
  kHttp09,
  kUnrequested101,
  kExcessBody,      // more body bytes than Content-Length
  kBodyOn204,
  kOversizedHead,   // one 64 KB header
};
std::string badFramingBytes(BadFraming kind);

// The byte at `offset` of every generated body: tests check streamed bodies
// against it without holding them.
char generatedByte(size_t offset);

struct Behaviour {
  Fault fault = Fault::kNone;
  int status = 200;
  std::string reason = "OK";
  HeaderList headers;              // added after the framing header
  std::string body = "ok";
  size_t generated_body = 0;       // > 0: the body is this many generatedByte()s instead
  Framing framing = Framing::kContentLength;
  size_t chunk_size = 0;           // chunked: bytes per chunk, 0 = one chunk
  bool keepalive = true;           // false: "Connection: close" and close after
  Ms delay{0};                     // before the status line (slow upstream)
  Ms idle_close{-1};               // >= 0: close if no next request within it
  size_t sent_before_fault = 0;    // truncated / stall mid-body
  size_t upload_bytes = 0;         // reset during upload
  std::string raw;                 // kRaw

  size_t bodySize() const { return generated_body > 0 ? generated_body : body.size(); }

  static Behaviour respond(int status, std::string body, HeaderList headers = {});
  static Behaviour chunked(std::string body, size_t chunk_size = 0);
  static Behaviour closing(int status, std::string body);  // Connection: close, then close
  static Behaviour slow(Ms delay, std::string body = "ok");
  static Behaviour largeBody(size_t bytes, Framing framing = Framing::kContentLength);
  static Behaviour idleCloseAfter(Ms idle, std::string body = "ok");
  static Behaviour stallOnAccept();
  static Behaviour resetOnAccept();
  static Behaviour resetAfterRequest();
  static Behaviour truncatedBody(std::string body, size_t sent);
  static Behaviour truncatedChunked(std::string body, size_t sent);
  static Behaviour stallMidBody(std::string body, size_t sent);
  static Behaviour earlyResponse(int status, std::string body);
  static Behaviour resetDuringUpload(size_t after_bytes);
  static Behaviour rawBytes(std::string bytes);
  static Behaviour badFraming(BadFraming kind) { return rawBytes(badFramingBytes(kind)); }
  static Behaviour upgradeEcho();
};

// A loopback port that refuses connections for as long as this object
// lives: a socket bound to it that never listens, so nothing else takes it.
class RefusingPort {
 public:
  RefusingPort();
  ~RefusingPort();
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class FakeUpstream {
 public:
  using Handler = std::function<Behaviour(const RecordedRequest&)>;

  // Listens on 127.0.0.1 on a free port; answers Behaviour::respond(200, "ok")
  // until told otherwise.
  FakeUpstream();
  // Stops listening, wakes and joins every thread, closes every fd.
  ~FakeUpstream();
  FakeUpstream(const FakeUpstream&) = delete;
  FakeUpstream& operator=(const FakeUpstream&) = delete;

  int port() const { return port_; }

  // Which behaviour a request gets: the queue's front if any, else the
  // handler's answer, else the default. The handler runs in a connection
  // thread after the head is read and before the body is (so it sees no
  // body). kStallOnAccept / kResetOnAccept at the queue's front (or as the
  // default, with no handler) act before a request is read.
  void setDefault(Behaviour b);
  void enqueue(Behaviour b);
  void setHandler(Handler h);
  // Behaviours still queued.
  size_t pending() const;

  // Ends every current stall (kStallOnAccept closes, kStallMidBody sends the
  // rest). A stall counts as current once its bytes could be seen.
  void release();
  // Closes every keepalive connection that is waiting for its next request,
  // or that will be once the response it is sending now is out.
  void closeIdleConnections();
  // Closes the listener (joins the acceptor): new connects are refused,
  // accepted connections go on, and those still in the backlog are reset
  // (waitForConnections() first to keep them).
  void stopListening();

  std::vector<RecordedRequest> requests() const;
  size_t requestCount() const;
  bool waitForRequests(size_t n, Ms timeout = Ms(5000)) const;
  int connectionsAccepted() const { return accepted_.load(); }
  bool waitForConnections(int n, Ms timeout = Ms(5000)) const;
  int openConnections() const { return open_.load(); }
  bool waitForOpenConnections(int n, Ms timeout = Ms(5000)) const;
  // Requests read so far on connection `id` (1-based).
  int requestsOnConnection(int id) const;
  // Response body bytes written to sockets (all connections): a stalled
  // reader shows as a count that stops growing.
  uint64_t bodyBytesSent() const { return body_bytes_sent_.load(); }

 private:
  struct Conn;
  class Session;
  friend class Session;

  void acceptLoop();
  void startConn(int fd);
  void reapFinished();
  void wakeAll();
  Behaviour pickPreRead(bool* found);
  Behaviour pick(const RecordedRequest& head);
  void record(const RecordedRequest& r);
  void notify();

  int listen_fd_ = -1;
  int accept_wake_ = -1;
  int port_ = 0;
  std::thread acceptor_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::list<std::unique_ptr<Conn>> conns_;
  std::deque<Behaviour> queue_;
  Behaviour default_;
  Handler handler_;
  std::vector<RecordedRequest> requests_;
  uint64_t release_gen_ = 0;
  uint64_t idle_close_gen_ = 0;
  bool stopping_ = false;

  std::atomic<int> accepted_{0};
  std::atomic<int> open_{0};
  std::atomic<uint64_t> body_bytes_sent_{0};
};

}  // namespace tidegate::test
