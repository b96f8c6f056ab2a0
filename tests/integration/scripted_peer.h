// Scripted loopback peers for the cosocket tests (lua_socket_test.cc,
// lua_socket_tls_test.cc) and the Lua snippets that reach them.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace tidegate::test {

// A loopback listener whose every connection runs `script(fd)` in a thread
// of its own (the fd is closed afterwards).
class ScriptedPeer {
 public:
  explicit ScriptedPeer(std::function<void(int)> script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 64);
    acceptor_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        accepted_++;
        std::lock_guard<std::mutex> lock(mu_);
        threads_.emplace_back([this, c] {
          script_(c);
          ::close(c);
        });
      }
    });
  }
  ~ScriptedPeer() {
    ::shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(fd_);
    for (auto& t : threads_) t.join();
  }
  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  std::function<void(int)> script_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

// Reads one "\n"-terminated line from fd (byte by byte: tests only).
inline std::string readLine(int fd) {
  std::string line;
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n') line += ch;
  return line;
}

inline void writeAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// A peer script that reads until the gateway closes, then counts it.
inline std::function<void(int)> readUntilClose(std::atomic<int>* closes) {
  return [closes](int fd) {
    char buf[256];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
    (*closes)++;
  };
}

// Starts `gw` with location /t running `body` (Lua) in content_by_lua_block.
inline Gateway* startWith(Gateway& gw, const std::string& body, const std::string& http_extra = "") {
  gw.setSimpleConf("location /t { content_by_lua_block {\n" + body + "\n} }", http_extra);
  return gw.start() ? &gw : nullptr;
}

// Lua: `sock`, connected to 127.0.0.1:port.
inline std::string connectTo(int port) {
  return "local sock = ngx.socket.tcp()\nassert(sock:connect(\"127.0.0.1\", " + std::to_string(port) + "))\n";
}

// The same, with a GET sent.
inline std::string connectAndGet(int port) {
  return connectTo(port) + "sock:send(\"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\")\n";
}

// The client leaves while `lua` waits on `sock` (connected to a peer that
// reads until closed; `lua` logs "cosocket waiting" before it waits): the
// wait is cancelled, the peer sees its connection closed, and the worker
// lives on with no error logged.
inline void expectClientLeavingClosesThePeer(const std::string& lua) {
  std::atomic<int> closes{0};
  ScriptedPeer peer(readUntilClose(&closes));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectTo(peer.port()) + lua, "lua_check_client_abort on;"));
  {
    RawClient c(gw.port());
    c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("cosocket waiting"));
  }
  EXPECT_TRUE(waitFor([&] { return closes.load() == 1; }));
  EXPECT_EQ(httpGet(gw.port(), "/none").status, 404);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace tidegate::test
