// A datagram peer for the UDP cosocket tests: a thread on a UDP socket
// (127.0.0.1, a free port) or a datagram unix-domain socket answers each
// datagram with what its script returns. The destructor stops the thread
// and closes everything it opened.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace tidegate::test {

// An eventfd that a test thread polls beside its sockets: fire() tells it
// to end.
class StopSignal {
 public:
  StopSignal() : fd_(::eventfd(0, 0)) {}
  ~StopSignal() { ::close(fd_); }
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  int fd() const { return fd_; }
  void fire() const {
    uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof(one));
  }

 private:
  int fd_;
};

class UdpPeer {
 public:
  // The answer to one datagram; nullopt: none.
  using Script = std::function<std::optional<std::string>(const std::string& datagram)>;

  // On 127.0.0.1:`port` (0: a free one), or on `unix_path` when given.
  explicit UdpPeer(Script script, int port = 0, const std::string& unix_path = "") : script_(std::move(script)) {
    if (unix_path.empty()) {
      fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(port));
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
        socklen_t len = sizeof(a);
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
      }
    } else {
      fd_ = ::socket(AF_UNIX, SOCK_DGRAM, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::strncpy(a.sun_path, unix_path.c_str(), sizeof(a.sun_path) - 1);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) port_ = -1;
    }
    thread_ = std::thread([this] { run(); });
  }
  ~UdpPeer() {
    stop_.fire();
    thread_.join();
    ::close(fd_);
  }
  UdpPeer(const UdpPeer&) = delete;
  UdpPeer& operator=(const UdpPeer&) = delete;

  // 0 if the bind failed (the port was taken); -1 for a unix socket.
  int port() const { return port_; }
  int received() const { return received_.load(); }

 private:
  void run() {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
    for (;;) {
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      char buf[65536];
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      ssize_t n = ::recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      received_++;
      std::optional<std::string> reply = script_(std::string(buf, static_cast<size_t>(n)));
      if (reply) ::sendto(fd_, reply->data(), reply->size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  Script script_;
  int fd_ = -1;
  StopSignal stop_;
  int port_ = 0;
  std::atomic<int> received_{0};
  std::thread thread_;
};

}  // namespace tidegate::test
