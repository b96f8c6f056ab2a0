// An upstream's JSON description: what the conf publishes reads back the
// same, and bad input is refused with the field to blame.
#include "upstream/upstream_json.h"

#include <gtest/gtest.h>

namespace tidegate::upstream {
namespace {

conf::UpstreamConf sample() {
  conf::UpstreamConf u;
  u.name = "Backend";
  conf::UpstreamServer a;
  a.host = "app1";
  a.port = 8080;
  a.addresses = {"10.0.0.5:8080", "10.0.0.6:8080"};
  a.weight = 3;
  a.max_fails = 2;
  a.fail_timeout_ms = 2500;
  conf::UpstreamServer b;
  b.host = "10.0.0.7";
  b.port = 81;
  b.addresses = {"10.0.0.7:81"};
  b.backup = true;
  b.tier = 1;
  b.down = true;
  u.servers = {a, b};
  u.balancer = "chash";
  conf::ComplexValue key;
  std::string err;
  EXPECT_TRUE(conf::compileComplexValue("$arg_u", &key, &err));
  u.hash_key = key;
  u.fail_open = true;
  u.tier_min_healthy = 50;
  u.keepalive = 16;
  u.keepalive_timeout_ms = 30000;
  u.keepalive_requests = 500;
  u.pool_conns = 8;
  u.pool_wait_ms = 250;
  u.health_check.enabled = true;
  u.health_check.uri = "/healthz";
  u.health_check.host = "check.local";
  u.health_check.interval_ms = 2000;
  u.health_check.unhealthy_interval_ms = 500;
  u.health_check.timeout_ms = 300;
  u.health_check.fails = 3;
  u.health_check.passes = 2;
  u.health_check.statuses = {{200, 204}, {302, 302}};
  u.health_check.port = 9000;
  return u;
}

bool parse(const std::string& text, conf::UpstreamConf* out, std::string* err, std::string* field,
           std::string* origin = nullptr) {
  std::string o;
  return upstreamFromJson(text, out, origin ? origin : &o, nullptr, err, field);
}

TEST(UpstreamJsonTest, RoundTripKeepsEveryField) {
  conf::UpstreamConf u = sample();
  std::string text = upstreamToJson(u, "conf");
  conf::UpstreamConf back;
  std::string err, field, origin;
  ASSERT_TRUE(parse(text, &back, &err, &field, &origin)) << err << "\n" << text;
  EXPECT_EQ(origin, "conf");
  EXPECT_EQ(back.name, "Backend");
  ASSERT_EQ(back.servers.size(), 2u);
  EXPECT_EQ(back.servers[0].host, "app1");
  EXPECT_EQ(back.servers[0].port, 8080);
  EXPECT_EQ(back.servers[0].addresses, u.servers[0].addresses);
  EXPECT_EQ(back.servers[0].weight, 3);
  EXPECT_EQ(back.servers[0].max_fails, 2);
  EXPECT_EQ(back.servers[0].fail_timeout_ms, 2500u);
  EXPECT_TRUE(back.servers[1].backup);
  EXPECT_TRUE(back.servers[1].down);
  EXPECT_EQ(back.servers[1].tier, 1);
  EXPECT_EQ(back.balancer, "chash");
  ASSERT_TRUE(back.hash_key);
  EXPECT_EQ(back.hash_key->raw, "$arg_u");
  EXPECT_TRUE(back.fail_open);
  EXPECT_EQ(back.tier_min_healthy, 50);
  EXPECT_EQ(back.keepalive, 16u);
  EXPECT_EQ(back.keepalive_timeout_ms, 30000u);
  EXPECT_EQ(back.keepalive_requests, 500u);
  EXPECT_EQ(back.pool_conns, 8u);
  EXPECT_EQ(back.pool_wait_ms, 250u);
  const conf::HealthCheckConf& hc = back.health_check;
  EXPECT_TRUE(hc.enabled);
  EXPECT_FALSE(hc.tcp);
  EXPECT_EQ(hc.uri, "/healthz");
  EXPECT_EQ(hc.host, "check.local");
  EXPECT_EQ(hc.interval_ms, 2000u);
  EXPECT_EQ(hc.unhealthy_interval_ms, 500u);
  EXPECT_EQ(hc.timeout_ms, 300u);
  EXPECT_EQ(hc.fails, 3);
  EXPECT_EQ(hc.passes, 2);
  EXPECT_EQ(hc.statuses, (std::vector<std::pair<int, int>>{{200, 204}, {302, 302}}));
  EXPECT_EQ(hc.port, 9000);
  // The same conf gives the same text (the table publishes only changes).
  EXPECT_EQ(upstreamToJson(back, "conf"), text);
}

TEST(UpstreamJsonTest, NoHealthCheckMeansNone) {
  conf::UpstreamConf u = sample();
  u.health_check = conf::HealthCheckConf();
  std::string text = upstreamToJson(u, "api");
  EXPECT_EQ(text.find("health_check"), std::string::npos);
  conf::UpstreamConf back;
  std::string err, field;
  ASSERT_TRUE(parse(text, &back, &err, &field)) << err;
  EXPECT_FALSE(back.health_check.enabled);
}

TEST(UpstreamJsonTest, DefaultsAndDurationStrings) {
  conf::UpstreamConf u;
  std::string err, field;
  ASSERT_TRUE(parse(R"({"servers": [{"host": "127.0.0.1", "port": 9001, "fail_timeout": "1m30s"}],
                        "health_check": {"type": "tcp", "interval": 0.25, "timeout": "100ms"}})",
                    &u, &err, &field))
      << err;
  ASSERT_EQ(u.servers.size(), 1u);
  EXPECT_EQ(u.servers[0].addresses, std::vector<std::string>{"127.0.0.1:9001"});  // resolved
  EXPECT_EQ(u.servers[0].weight, 1);
  EXPECT_EQ(u.servers[0].max_fails, 1);
  EXPECT_EQ(u.servers[0].fail_timeout_ms, 90000u);
  EXPECT_EQ(u.balancer, "round_robin");
  EXPECT_TRUE(u.health_check.tcp);
  EXPECT_EQ(u.health_check.interval_ms, 250u);
  EXPECT_EQ(u.health_check.timeout_ms, 100u);
  EXPECT_EQ(u.health_check.uri, "/");
  EXPECT_TRUE(u.health_check.statusOk(204));
  EXPECT_FALSE(u.health_check.statusOk(404));
}

TEST(UpstreamJsonTest, BadInputNamesTheField) {
  struct Case {
    const char* json;
    const char* field;
    const char* says;
  } cases[] = {
      {"{", "", "malformed JSON"},
      {"[]", "", "must be an object"},
      {R"({"servers": {}})", "servers", "must be an array"},
      {R"({"servers": [{"port": 80}]})", "servers[0].host", "is required"},
      {R"({"servers": [{"host": "a", "port": 0}]})", "servers[0].port", "from 1 to 65535"},
      {R"({"servers": [{"host": "a", "port": 80, "addresses": ["1.2.3.4:80"]}, {"host": "b", "port": 80,
          "addresses": ["1.2.3.5:80"], "weight": "2"}]})",
       "servers[1].weight", "must be an integer"},
      {R"({"servers": [{"host": "a", "port": 80, "addresses": [], "colour": "red"}]})", "servers[0].colour",
       "unknown field"},
      {R"({"servers": [{"host": "a", "port": 80, "addresses": []}, {"host": "a", "port": 80, "addresses": []}]})",
       "servers[1]", "duplicate server \"a:80\""},
      {R"({"balancer": {"type": "random"}})", "balancer.type", "must be round_robin"},
      {R"({"balancer": {"type": "chash"}})", "balancer.key", "is required for chash"},
      {R"({"balancer": {"type": "chash", "key": "$nope"}})", "balancer.key", "unknown \"nope\" variable"},
      {R"({"keepalive": -1})", "keepalive", "from 0"},
      {R"({"keepalive_timeout": "soon"})", "keepalive_timeout", "must be seconds"},
      {R"({"pool_conns": -1})", "pool_conns", "from 0"},
      {R"({"pool_wait": "soon"})", "pool_wait", "must be seconds"},
      {R"({"health_check": {"type": "udp"}})", "health_check.type", "\"http\" or \"tcp\""},
      {R"({"health_check": {"uri": "healthz"}})", "health_check.uri", "starting with /"},
      {R"({"health_check": {"fails": 0}})", "health_check.fails", "from 1 to 1000"},
      {R"({"health_check": {"status": ["200-99"]}})", "health_check.status", "within 100-599"},
      {R"({"health_check": {"interval": 0}})", "health_check.interval", "above 0"},
      {R"({"unknown": 1})", "unknown", "unknown field"},
  };
  for (const Case& c : cases) {
    conf::UpstreamConf u;
    std::string err, field;
    EXPECT_FALSE(parse(c.json, &u, &err, &field)) << c.json;
    EXPECT_EQ(field, c.field) << c.json;
    EXPECT_NE(err.find(c.says), std::string::npos) << c.json << " -> " << err;
  }
}

}  // namespace
}  // namespace tidegate::upstream
