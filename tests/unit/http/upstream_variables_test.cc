// The proxy's variables as nginx prints them ($upstream_*, $upstream_http_NAME,
// $proxy_host, $proxy_port, $proxy_add_x_forwarded_for), read through the
// access log's formatter and through the "not found" check ngx.var uses.
#include "http/upstream_variables.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/access_log.h"
#include "http/variables.h"

namespace tidegate::http {
namespace {

// A request whose head's slices point into `buf_`, as the connection's do.
class UpstreamVariablesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_.remote_addr = "192.0.2.7";
    req_.conn = &conn_;
  }

  void setRequestHeaders(const std::vector<std::pair<std::string, std::string>>& headers) {
    buf_.clear();
    head_.clear();
    for (const auto& [name, value] : headers) {
      HeaderField f;
      f.name = {static_cast<uint32_t>(buf_.size()), static_cast<uint32_t>(name.size())};
      buf_ += name + ": ";
      f.value = {static_cast<uint32_t>(buf_.size()), static_cast<uint32_t>(value.size())};
      buf_ += value + "\r\n";
      head_.headers.push_back(f);
    }
    req_.base = buf_.data();
    req_.head = &head_;
  }

  // The access log's rendering of `text`: empty values as "-".
  std::string log(std::string_view text) {
    conf::LogFormat fmt;
    std::string err;
    EXPECT_TRUE(conf::compileComplexValue(text, &fmt.format, &err)) << err;
    std::string out;
    formatLogLine(fmt, req_, &out);
    return out;
  }

  // What ngx.var.NAME reads: nil for nginx's "not found".
  std::optional<std::string> var(std::string_view name) {
    conf::VarRef ref;
    EXPECT_TRUE(conf::lookupVariable(name, &ref)) << name;
    if (!variableFound(ref, req_)) return std::nullopt;
    std::string out;
    appendVariable(ref, req_, &out);
    return out;
  }

  std::string buf_;
  RequestHead head_;
  ConnInfo conn_;
  Request req_;
};

TEST_F(UpstreamVariablesTest, OneTry) {
  req_.upstream.tries.push_back({"10.0.0.1:8080", 200, 1'500, 12'000, 12'999, 512});
  EXPECT_EQ(log("$upstream_addr"), "10.0.0.1:8080");
  EXPECT_EQ(log("$upstream_status"), "200");
  EXPECT_EQ(log("$upstream_connect_time"), "0.001");
  EXPECT_EQ(log("$upstream_header_time"), "0.012");
  EXPECT_EQ(log("$upstream_response_time"), "0.012");  // µs truncated to nginx's ms
  EXPECT_EQ(log("$upstream_response_length"), "512");
  EXPECT_EQ(var("upstream_status"), "200");
}

TEST_F(UpstreamVariablesTest, ThreeTriesTheFirstFailingToConnect) {
  req_.upstream.tries.push_back({"10.0.0.1:8080", 502, -1, -1, 3'000, 0});
  req_.upstream.tries.push_back({"10.0.0.2:8080", 504, 2'000, -1, 60'001'000, 0});
  req_.upstream.tries.push_back({"10.0.0.3:8080", 200, 0, 1'234'567, 2'345'678, 1048576});
  EXPECT_EQ(log("$upstream_addr"), "10.0.0.1:8080, 10.0.0.2:8080, 10.0.0.3:8080");
  EXPECT_EQ(log("$upstream_status"), "502, 504, 200");
  EXPECT_EQ(log("$upstream_connect_time"), "-, 0.002, 0.000");
  EXPECT_EQ(log("$upstream_header_time"), "-, -, 1.234");
  EXPECT_EQ(log("$upstream_response_time"), "0.003, 60.001, 2.345");
  EXPECT_EQ(log("$upstream_response_length"), "0, 0, 1048576");
}

TEST_F(UpstreamVariablesTest, StatusZeroIsDashAndNegativeTimeIsZero) {
  req_.upstream.tries.push_back({"backend", 0, -5, -1, -1, 0});
  EXPECT_EQ(log("$upstream_status $upstream_connect_time"), "- 0.000");
}

TEST_F(UpstreamVariablesTest, NoTriesIsNotFound) {
  for (const char* name : {"upstream_addr", "upstream_status", "upstream_response_time", "upstream_connect_time",
                           "upstream_header_time", "upstream_response_length", "proxy_host", "proxy_port",
                           "upstream_http_x_foo"}) {
    EXPECT_EQ(var(name), std::nullopt) << name;
  }
  EXPECT_EQ(log("$upstream_addr|$upstream_status|$upstream_response_time|$proxy_host"), "-|-|-|-");
}

TEST_F(UpstreamVariablesTest, UpstreamHttpJoinsEveryHeaderOfThatName) {
  req_.upstream.setHeaders({{"X-Foo", "a"}, {"Content-Type", "text/plain"}, {"x-foo", "b, c"}, {"X-Foo-Bar", "no"}});
  EXPECT_EQ(var("upstream_http_x_foo"), "a, b, c");
  EXPECT_EQ(var("upstream_http_X_FOO"), "a, b, c");
  EXPECT_EQ(var("upstream_http_content_type"), "text/plain");
  EXPECT_EQ(var("upstream_http_x_bar"), std::nullopt);
  EXPECT_EQ(log("[$upstream_http_x_foo] [$upstream_http_x_bar]"), "[a, b, c] [-]");
}

TEST_F(UpstreamVariablesTest, UpstreamHttpUnderscoreInHeaderNameMatchesToo) {
  // nginx compares the header's name with '-' read as '_'.
  req_.upstream.setHeaders({{"X_Foo", "u"}});
  EXPECT_EQ(var("upstream_http_x_foo"), "u");
}

TEST_F(UpstreamVariablesTest, EmptyUpstreamHeaderIsFoundButEmpty) {
  req_.upstream.setHeaders({{"X-Empty", ""}});
  EXPECT_EQ(var("upstream_http_x_empty"), "");
  EXPECT_EQ(log("$upstream_http_x_empty"), "-");
}

TEST_F(UpstreamVariablesTest, ClearedRecordHasNoHeadersButHandsBackTheirStrings) {
  const std::string long_value(40, 'v');
  req_.upstream.setHeaders({{"X-Foo", long_value}});
  const char* data = req_.upstream.headers()[0].second.data();
  req_.upstream.clear();  // the next request on the connection
  EXPECT_TRUE(req_.upstream.headers().empty());
  EXPECT_EQ(var("upstream_http_x_foo"), std::nullopt);

  std::vector<UpstreamRecord::Field> fields = {{"X-Bar", "b"}};
  size_t bytes = 7;  // what the new fields' strings hold, as the giver counts it
  req_.upstream.exchangeHeaders([&](auto& mine, size_t& mine_bytes) {
    mine.swap(fields);
    std::swap(mine_bytes, bytes);
  });
  EXPECT_EQ(var("upstream_http_x_bar"), "b");
  EXPECT_EQ(var("upstream_http_x_foo"), std::nullopt);
  ASSERT_EQ(fields.size(), 1u);  // the cleared record's strings, capacity and all
  EXPECT_EQ(fields[0].second.data(), data);
  EXPECT_GE(bytes, long_value.size());  // and the heap they hold, counted by setHeaders()

  req_.upstream.exchangeHeaders([&](auto&, size_t& mine_bytes) { EXPECT_EQ(mine_bytes, 7u); });
}

TEST_F(UpstreamVariablesTest, ProxyHostAndPort) {
  req_.upstream.proxy_host = "backend";
  req_.upstream.proxy_port = "80";
  EXPECT_EQ(log("$proxy_host:$proxy_port"), "backend:80");
  EXPECT_EQ(var("proxy_host"), "backend");
}

TEST_F(UpstreamVariablesTest, ProxyAddXForwardedForWithoutTheHeader) {
  setRequestHeaders({{"Host", "a.test"}});
  EXPECT_EQ(var("proxy_add_x_forwarded_for"), "192.0.2.7");
}

TEST_F(UpstreamVariablesTest, ProxyAddXForwardedForWithOneHeader) {
  setRequestHeaders({{"X-Forwarded-For", "203.0.113.1"}});
  EXPECT_EQ(var("proxy_add_x_forwarded_for"), "203.0.113.1, 192.0.2.7");
  EXPECT_EQ(log("$proxy_add_x_forwarded_for"), "203.0.113.1, 192.0.2.7");
}

TEST_F(UpstreamVariablesTest, ProxyAddXForwardedForWithTwoHeaders) {
  setRequestHeaders({{"x-forwarded-for", "203.0.113.1, 198.51.100.2"}, {"Host", "a.test"},
                     {"X-Forwarded-For", "198.51.100.9"}});
  EXPECT_EQ(var("proxy_add_x_forwarded_for"), "203.0.113.1, 198.51.100.2, 198.51.100.9, 192.0.2.7");
}

TEST_F(UpstreamVariablesTest, ProxyAddXForwardedForSeesLuaHeaderEdits) {
  setRequestHeaders({{"X-Forwarded-For", "203.0.113.1"}});
  req_.removeHeader("x-forwarded-for");
  req_.addHeader("X-Forwarded-For", "10.9.9.9");
  EXPECT_EQ(var("proxy_add_x_forwarded_for"), "10.9.9.9, 192.0.2.7");
}

TEST_F(UpstreamVariablesTest, ProxyAddXForwardedForKeepsAnEmptyHeader) {
  // nginx counts the header even when its value is empty.
  setRequestHeaders({{"X-Forwarded-For", ""}});
  EXPECT_EQ(var("proxy_add_x_forwarded_for"), ", 192.0.2.7");
}

TEST_F(UpstreamVariablesTest, UpstreamHttpIsAPrefixFamily) {
  conf::VarRef ref;
  ASSERT_TRUE(conf::lookupVariable("upstream_http_X_Foo", &ref));
  EXPECT_EQ(ref.id, conf::VarId::kUpstreamHttpHeader);
  EXPECT_EQ(ref.param, "x-foo");
  EXPECT_TRUE(conf::isPrefixVariable(ref.id));
  ASSERT_TRUE(conf::lookupVariable("upstream_addr", &ref));
  EXPECT_EQ(ref.id, conf::VarId::kUpstreamAddr);
}

}  // namespace
}  // namespace tidegate::http
