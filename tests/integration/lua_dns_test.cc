// Debian's lua-nginx-dns (require "nginx.dns.resolver"), unmodified, over
// ngx.socket.udp and, for truncated answers, ngx.socket.tcp, against a
// small DNS server of the test on loopback.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "udp_peer.h"

namespace tidegate::test {
namespace {

// RFC 1035 3.2.2 types.
constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeTxt = 16, kTypeAaaa = 28;
// 40 A records (16 bytes each) pass the 512 bytes of a UDP answer (RFC
// 1035 4.2.1), so big.example.test is answered truncated over UDP.
constexpr int kBigRecords = 40;

std::string u16(unsigned v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }

// RFC 1035 3.1: a name as length-prefixed labels.
std::string encodeName(const std::string& name) {
  std::string out;
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    out += static_cast<char>(dot - start);
    out += name.substr(start, dot - start);
    start = dot + 1;
  }
  return out + '\0';
}

struct Record {
  std::string owner;
  uint16_t type;
  std::string rdata;
};

std::string ipv4(int a, int b, int c, int d) {
  return {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c), static_cast<char>(d)};
}

// The zone: www (two A, one AAAA), alias (a CNAME to www), txt, big.
// nullopt: NXDOMAIN.
std::optional<std::vector<Record>> lookup(const std::string& name, uint16_t type) {
  const std::string www = "www.example.test";
  std::vector<Record> www_a = {{www, kTypeA, ipv4(192, 0, 2, 1)}, {www, kTypeA, ipv4(192, 0, 2, 2)}};
  if (name == www && type == kTypeA) return www_a;
  if (name == www && type == kTypeAaaa) {
    const std::string v6("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);  // 2001:db8::1
    return std::vector<Record>{{www, kTypeAaaa, v6}};
  }
  if (name == www) return std::vector<Record>{};
  if (name == "alias.example.test") {
    std::vector<Record> r = {{name, kTypeCname, encodeName(www)}};
    if (type == kTypeA) r.insert(r.end(), www_a.begin(), www_a.end());
    return r;
  }
  if (name == "txt.example.test") {
    std::string txt = "hello world";
    return std::vector<Record>{{name, kTypeTxt, static_cast<char>(txt.size()) + txt}};
  }
  if (name == "big.example.test") {
    std::vector<Record> r;
    for (int i = 1; i <= kBigRecords; i++) r.push_back({name, kTypeA, ipv4(198, 51, 100, i)});
    return r;
  }
  return std::nullopt;
}

// The answer to one query (RFC 1035 4.1), or nullopt for garbage. Over
// UDP an answer above 512 bytes is sent empty with TC set (4.1.1).
std::optional<std::string> answer(const std::string& q, bool udp) {
  if (q.size() < 12 || q[4] != 0 || q[5] != 1) return std::nullopt;
  size_t pos = 12;
  std::string name;
  while (pos < q.size() && q[pos] != 0) {
    size_t len = static_cast<unsigned char>(q[pos]);
    if (!name.empty()) name += '.';
    for (size_t i = 1; i <= len && pos + i < q.size(); i++) name += static_cast<char>(std::tolower(q[pos + i]));
    pos += len + 1;
  }
  if (pos + 5 > q.size()) return std::nullopt;
  auto type = static_cast<uint16_t>(static_cast<unsigned char>(q[pos + 1]) << 8 | static_cast<unsigned char>(q[pos + 2]));
  std::string question = q.substr(12, pos + 5 - 12);
  std::optional<std::vector<Record>> records = lookup(name, type);
  std::string rrs;
  for (const Record& r : records.value_or(std::vector<Record>{})) {
    rrs += r.owner == name ? u16(0xc00c) : encodeName(r.owner);  // 4.1.4: a pointer to the question's name
    rrs += u16(r.type) + u16(1) + u16(0) + u16(300) + u16(static_cast<unsigned>(r.rdata.size())) + r.rdata;
  }
  unsigned flags = 0x8400 | (q[2] & 0x01) << 8 | 0x80;  // QR, AA, RD copied, RA
  if (!records) flags |= 3;                             // NXDOMAIN
  size_t count = records ? records->size() : 0;
  if (udp && 12 + question.size() + rrs.size() > 512) {
    flags |= 0x200;  // TC
    rrs.clear();
    count = 0;
  }
  return q.substr(0, 2) + u16(flags) + u16(1) + u16(static_cast<unsigned>(count)) + u16(0) + u16(0) + question + rrs;
}

// Reads exactly n bytes unless the peer closes or `stop_fd` fires.
bool readFull(int fd, int stop_fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 || fds[1].revents) return false;
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// The DNS server: UDP and TCP (RFC 1035 4.2.2: a two-byte length before
// each message) on the same loopback port.
class DnsServer {
 public:
  DnsServer() {
    for (int attempt = 0; attempt < 20 && tcp_fd_ < 0; attempt++) {
      udp_ = std::make_unique<UdpPeer>([](const std::string& q) { return answer(q, true); });
      tcp_fd_ = listenOn(udp_->port());
    }
    thread_ = std::thread([this] { serveTcp(); });
  }
  ~DnsServer() {
    stop_.fire();
    thread_.join();
    ::close(tcp_fd_);
  }
  int port() const { return udp_->port(); }
  int udpQueries() const { return udp_->received(); }
  int tcpQueries() const { return tcp_queries_.load(); }

 private:
  static int listenOn(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 16) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }
  void serveTcp() {
    for (;;) {
      pollfd fds[2] = {{tcp_fd_, POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      int c = ::accept(tcp_fd_, nullptr, nullptr);
      if (c < 0) continue;
      char len[2];
      while (readFull(c, stop_.fd(), len, 2)) {
        std::string q(static_cast<size_t>(static_cast<unsigned char>(len[0]) << 8 | static_cast<unsigned char>(len[1])), '\0');
        if (!readFull(c, stop_.fd(), q.data(), q.size())) break;
        tcp_queries_++;
        std::optional<std::string> a = answer(q, false);
        if (!a) break;
        std::string out = u16(static_cast<unsigned>(a->size())) + *a;
        if (::write(c, out.data(), out.size()) != static_cast<ssize_t>(out.size())) break;
      }
      ::close(c);
    }
  }

  std::unique_ptr<UdpPeer> udp_;
  int tcp_fd_ = -1;
  StopSignal stop_;
  std::atomic<int> tcp_queries_{0};
  std::thread thread_;
};

// What show() prints for the A records of www.example.test.
const std::string kWwwA = "www.example.test 1 192.0.2.1 300\nwww.example.test 1 192.0.2.2 300\n";

// Lua: `r`, a resolver for 127.0.0.1:port, and show(answers, err), which
// prints one line per answer (or the error).
std::string resolverAt(int port, int timeout_ms = 1000) {
  return R"(
    local resolver = require "nginx.dns.resolver"
    local r, err = resolver:new{nameservers = {{"127.0.0.1", )" +
         std::to_string(port) + R"(}}, retrans = 2, timeout = )" + std::to_string(timeout_ms) + R"(}
    if not r then ngx.say("new: ", err) return end
    local function show(answers, err)
        if not answers then ngx.say("error: ", err) return end
        if answers.errcode then ngx.say("errcode ", answers.errcode, ": ", answers.errstr) end
        for _, a in ipairs(answers) do
            ngx.say(a.name, " ", a.type, " ", a.address or a.cname or a.txt, " ", a.ttl)
        end
    end
)";
}

// A server that never answers makes the resolver's receives time out,
// which lua_socket_log_errors logs.
void expectCleanStop(Gateway& gw) {
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua udp socket read timed out"}).empty()) << gw.errorLog();
}

// What a content handler printed running `lua` (after resolverAt() for a
// fresh DnsServer), and the queries that server saw.
struct Outcome {
  std::string body;
  int udp_queries = 0;
  int tcp_queries = 0;
};

// GET /t's body from a content handler running `lua`; the gateway stops cleanly.
std::string bodyOf(const std::string& lua) {
  Gateway gw;
  gw.setSimpleConf("location /t { content_by_lua_block {\n" + lua + "\n} }");
  if (!gw.start()) {
    ADD_FAILURE() << gw.errorLog();
    return "";
  }
  std::string body = httpGet(gw.port(), "/t").body;
  expectCleanStop(gw);
  return body;
}

Outcome resolveWith(const std::string& lua) {
  DnsServer dns;
  EXPECT_GT(dns.port(), 0);
  Outcome out;
  out.body = bodyOf(resolverAt(dns.port()) + lua);
  out.udp_queries = dns.udpQueries();
  out.tcp_queries = dns.tcpQueries();
  return out;
}

TEST(LuaDnsTest, AAaaaCnameAndTxtOverUdp) {
  Outcome out = resolveWith(R"(
    show(r:query("www.example.test", {qtype = r.TYPE_A}))
    show(r:query("www.example.test", {qtype = r.TYPE_AAAA}))
    show(r:query("alias.example.test", {qtype = r.TYPE_A}))
    show(r:query("alias.example.test", {qtype = r.TYPE_CNAME}))
    show(r:query("txt.example.test", {qtype = r.TYPE_TXT}))
  )");
  EXPECT_EQ(out.body, kWwwA + "www.example.test 28 2001:db8:0:0:0:0:0:1 300\n" +
                          "alias.example.test 5 www.example.test 300\n" + kWwwA +
                          "alias.example.test 5 www.example.test 300\n" + "txt.example.test 16 hello world 300\n");
  EXPECT_EQ(out.udp_queries, 5);
  EXPECT_EQ(out.tcp_queries, 0);
}

TEST(LuaDnsTest, NxDomain) {
  Outcome out = resolveWith(R"(
    local answers = r:query("nothing.example.test", {qtype = r.TYPE_A})
    ngx.say(answers.errcode, " ", answers.errstr, " ", #answers)
  )");
  EXPECT_EQ(out.body, "3 name error 0\n");
}

// The truncated UDP answer makes the library ask again over TCP
// (ngx.socket.tcp); tcp_query goes straight to TCP.
TEST(LuaDnsTest, TruncatedAnswerFallsBackToTcp) {
  Outcome out = resolveWith(R"(
    local answers, err = r:query("big.example.test", {qtype = r.TYPE_A})
    if not answers then ngx.say(err) return end
    ngx.say(#answers, " ", answers[1].address, " ", answers[#answers].address)
    show(r:tcp_query("www.example.test", {qtype = r.TYPE_A}))
  )");
  EXPECT_EQ(out.body, "40 198.51.100.1 198.51.100.40\n" + kWwwA);
  EXPECT_EQ(out.udp_queries, 1);
  EXPECT_EQ(out.tcp_queries, 2);
}

// A timer started by init_worker_by_lua resolves and leaves its result in
// a shared dict, which /result reads.
TEST(LuaDnsTest, FromATimerAtWorkerStart) {
  DnsServer dns;
  ASSERT_GT(dns.port(), 0);
  Gateway gw;
  gw.setSimpleConf(R"(location /result { content_by_lua_block { ngx.say(ngx.shared.dns:get("result")) } })",
                   "lua_shared_dict dns 1m;\ninit_worker_by_lua_block {\n ngx.timer.at(0, function()\n" +
                       resolverAt(dns.port()) + R"(
        local answers, err = r:query("www.example.test", {qtype = r.TYPE_A})
        local out = {}
        for _, a in ipairs(answers or {}) do out[#out + 1] = a.address end
        ngx.shared.dns:set("result", answers and table.concat(out, ",") or err)
    end)
  })");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  std::string body;
  EXPECT_TRUE(waitFor([&] {
    body = httpGet(gw.port(), "/result").body;
    return body != "nil\n";
  }));
  EXPECT_EQ(body, "192.0.2.1,192.0.2.2\n");
  expectCleanStop(gw);
}

// A server that never answers: both tries time out.
TEST(LuaDnsTest, ServerThatNeverAnswersTimesOut) {
  UdpPeer silent([](const std::string&) { return std::nullopt; });
  EXPECT_EQ(bodyOf(resolverAt(silent.port(), 100) + R"(
    local t0 = ngx.now()
    show(r:query("www.example.test", {qtype = r.TYPE_A}))
    ngx.say(ngx.now() - t0 < 2)
  )"), "error: failed to receive reply from UDP server 127.0.0.1:" + std::to_string(silent.port()) + ": timeout\ntrue\n");
  EXPECT_TRUE(waitFor([&] { return silent.received() == 2; }));
}

}  // namespace
}  // namespace tidegate::test
