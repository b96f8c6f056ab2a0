// upstream { } blocks: servers and their parameters, balancers, keepalive,
// and nginx's errors.
#include <gtest/gtest.h>

#include "conf/loader.h"
#include "load_util.h"

namespace tidegate::conf {
namespace {

TEST(UpstreamDirectivesTest, ServersAndParameters) {
  ConfigPtr cfg = load(
      "http {\n upstream backend {\n"
      "  server 127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30s;\n"
      "  server localhost:8082 tier=2;\n"
      "  server 127.0.0.2 backup;\n"
      "  server [::1]:8084 down;\n"
      "  keepalive 32; keepalive_timeout 30s; keepalive_requests 500;\n"
      " }\n server { keepalive_timeout 5s; } }\n");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->http.upstreams.size(), 1u);
  const UpstreamConf& u = *cfg->http.upstreams[0];
  EXPECT_EQ(u.name, "backend");
  ASSERT_EQ(u.servers.size(), 4u);
  EXPECT_EQ(u.servers[0].id(), "127.0.0.1:8081");
  EXPECT_EQ(u.servers[0].weight, 5);
  EXPECT_EQ(u.servers[0].max_fails, 3);
  EXPECT_EQ(u.servers[0].fail_timeout_ms, 30000u);
  EXPECT_EQ(u.servers[0].addresses, std::vector<std::string>{"127.0.0.1:8081"});
  EXPECT_EQ(u.servers[0].where, "test.conf:3");
  EXPECT_EQ(u.servers[1].host, "localhost");
  EXPECT_EQ(u.servers[1].tier, 2);
  ASSERT_FALSE(u.servers[1].addresses.empty());  // resolved at load
  EXPECT_EQ(u.servers[2].port, 80);              // nginx's default
  EXPECT_TRUE(u.servers[2].backup);
  EXPECT_EQ(u.servers[2].tier, 1);  // backup: the next tier
  EXPECT_TRUE(u.servers[3].down);
  EXPECT_EQ(u.servers[3].addresses, std::vector<std::string>{"[::1]:8084"});
  EXPECT_EQ(u.balancer, "round_robin");
  EXPECT_EQ(u.keepalive, 32u);
  EXPECT_EQ(u.keepalive_timeout_ms, 30000u);
  EXPECT_EQ(u.keepalive_requests, 500u);
  // The http-level keepalive_timeout is another directive of the same name.
  EXPECT_EQ(*cfg->http.servers[0]->settings.keepalive_timeout_ms, 5000u);
}

TEST(UpstreamDirectivesTest, Balancers) {
  ConfigPtr cfg = load(
      "http {\n"
      " upstream a { least_conn; server 127.0.0.1:1; }\n"
      " upstream b { hash $arg_user consistent; server 127.0.0.1:1; }\n"
      " upstream c { balancer ewma fail_open tier_min_healthy=50%; server 127.0.0.1:1; }\n"
      " upstream d { balancer chash key=$cookie_id; server 127.0.0.1:1; }\n"
      " upstream e { server 127.0.0.1:1; }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const auto& ups = cfg->http.upstreams;
  EXPECT_EQ(ups[0]->balancer, "least_conn");
  EXPECT_EQ(ups[1]->balancer, "chash");
  ASSERT_TRUE(ups[1]->hash_key);
  EXPECT_EQ(ups[1]->hash_key->raw, "$arg_user");
  EXPECT_EQ(ups[2]->balancer, "ewma");
  EXPECT_TRUE(ups[2]->fail_open);
  EXPECT_EQ(ups[2]->tier_min_healthy, 50);
  EXPECT_EQ(ups[3]->balancer, "chash");
  EXPECT_EQ(ups[3]->hash_key->raw, "$cookie_id");
  EXPECT_EQ(ups[4]->balancer, "round_robin");
  EXPECT_EQ(ups[4]->keepalive, 0u);
}

TEST(UpstreamDirectivesTest, Errors) {
  EXPECT_EQ(loadError("http {\n upstream a { }\n}"), "no servers are inside upstream in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1; } upstream a { server 127.0.0.1:2; } }"),
            "duplicate upstream \"a\" in test.conf:1");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1; }\n upstream A { server 127.0.0.1:2; } }"),
            "duplicate upstream \"A\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server 127.0.0.1:1 weight=0; } }"),
            "invalid parameter \"weight=0\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server 127.0.0.1:1 slow_start=1s; } }"),
            "invalid parameter \"slow_start=1s\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server 127.0.0.1:99999; } }"),
            "invalid host in upstream \"127.0.0.1:99999\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server [::zz]:80; } }"),
            "invalid host in upstream \"[::zz]:80\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server no-such-host.invalid:80; } }"),
            "host not found in upstream \"no-such-host.invalid\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a {\n server 127.0.0.1:1;\n server 127.0.0.1:1 weight=2; } }"),
            "duplicate server \"127.0.0.1:1\" in upstream \"a\" in test.conf:3");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n least_conn;\n hash $uri; } }"),
            "load balancing method redefined in test.conf:3");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n balancer random; } }"),
            "unknown balancer \"random\" (round_robin, chash, least_conn, ewma) in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n balancer chash; } }"),
            "balancer chash needs key=VALUE in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n hash $nope; } }"),
            "unknown \"nope\" variable in test.conf:2");
  EXPECT_EQ(loadError("http { server {\n upstream a { server 127.0.0.1:1; } } }"),
            "\"upstream\" directive is not allowed here in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n least_conn 1; } }"),
            "invalid number of arguments in \"least_conn\" directive in test.conf:2");
}

}  // namespace
}  // namespace tidegate::conf
