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
      "  pool_conns 8; pool_wait 250ms;\n"
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
  EXPECT_EQ(u.pool_conns, 8u);
  EXPECT_EQ(u.pool_wait_ms, 250u);
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
  EXPECT_EQ(ups[4]->pool_conns, 64u);  // tries past 64 open connections wait up to 100 ms
  EXPECT_EQ(ups[4]->pool_wait_ms, 100u);
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
            "unknown balancer \"random\" (round_robin, chash, least_conn, ewma, lua) in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n balancer chash; } }"),
            "balancer chash needs key=VALUE in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n hash $nope; } }"),
            "unknown \"nope\" variable in test.conf:2");
  EXPECT_EQ(loadError("http { server {\n upstream a { server 127.0.0.1:1; } } }"),
            "\"upstream\" directive is not allowed here in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n least_conn 1; } }"),
            "invalid number of arguments in \"least_conn\" directive in test.conf:2");
}

TEST(UpstreamDirectivesTest, HealthCheckDefaults) {
  ConfigPtr cfg = load(
      "http {\n"
      " upstream a { server 127.0.0.1:1; health_check; }\n"
      " upstream b { server 127.0.0.1:1; }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const HealthCheckConf& hc = cfg->http.upstreams[0]->health_check;
  EXPECT_TRUE(hc.enabled);
  EXPECT_FALSE(hc.tcp);
  EXPECT_EQ(hc.uri, "/");
  EXPECT_EQ(hc.host, "");
  EXPECT_EQ(hc.interval_ms, 5000u);
  EXPECT_EQ(hc.unhealthy_interval_ms, 0u) << "0: the interval";
  EXPECT_EQ(hc.timeout_ms, 1000u);
  EXPECT_EQ(hc.fails, 1);
  EXPECT_EQ(hc.passes, 1);
  EXPECT_EQ(hc.port, 0);
  EXPECT_TRUE(hc.statuses.empty());
  EXPECT_TRUE(hc.statusOk(200));
  EXPECT_TRUE(hc.statusOk(399));
  EXPECT_FALSE(hc.statusOk(199));
  EXPECT_FALSE(hc.statusOk(400));
  EXPECT_FALSE(cfg->http.upstreams[1]->health_check.enabled);
}

TEST(UpstreamDirectivesTest, HealthCheckParameters) {
  ConfigPtr cfg = load(
      "http {\n"
      " upstream a { server 127.0.0.1:1;\n"
      "  health_check type=http uri=/healthz?full=1 host=app.example interval=2s unhealthy_interval=500ms\n"
      "               timeout=300ms fails=3 passes=2 status=200,204,300-302 port=8081; }\n"
      " upstream b { server 127.0.0.1:1; health_check type=tcp interval=1m; }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const HealthCheckConf& hc = cfg->http.upstreams[0]->health_check;
  EXPECT_FALSE(hc.tcp);
  EXPECT_EQ(hc.uri, "/healthz?full=1");
  EXPECT_EQ(hc.host, "app.example");
  EXPECT_EQ(hc.interval_ms, 2000u);
  EXPECT_EQ(hc.unhealthy_interval_ms, 500u);
  EXPECT_EQ(hc.timeout_ms, 300u);
  EXPECT_EQ(hc.fails, 3);
  EXPECT_EQ(hc.passes, 2);
  EXPECT_EQ(hc.port, 8081);
  std::vector<std::pair<int, int>> statuses{{200, 200}, {204, 204}, {300, 302}};
  EXPECT_EQ(hc.statuses, statuses);
  EXPECT_TRUE(hc.statusOk(204));
  EXPECT_TRUE(hc.statusOk(301));
  EXPECT_FALSE(hc.statusOk(201));
  EXPECT_FALSE(hc.statusOk(303));
  const HealthCheckConf& tcp = cfg->http.upstreams[1]->health_check;
  EXPECT_TRUE(tcp.tcp);
  EXPECT_EQ(tcp.interval_ms, 60000u);
}

TEST(UpstreamDirectivesTest, HealthCheckErrors) {
  auto error = [](const std::string& params) {
    return loadError("http { upstream a { server 127.0.0.1:1;\n health_check " + params + "; } }");
  };
  for (const char* bad : {"type=udp", "uri=healthz", "uri=", "interval=0", "interval=soon", "unhealthy_interval=0",
                          "timeout=0", "fails=0", "fails=-1", "fails=x", "passes=0", "port=0", "port=65536",
                          "status=99", "status=600", "status=300-200", "status=200,", "status=2xx", "interval",
                          "color=blue"}) {
    EXPECT_EQ(error(bad), std::string("invalid parameter \"") + bad + "\" in test.conf:2") << bad;
  }
  EXPECT_EQ(error("interval=1s fails=2 passes=two"), "invalid parameter \"passes=two\" in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n health_check;\n health_check type=tcp; } }"),
            "\"health_check\" directive is duplicate in test.conf:3");
  EXPECT_EQ(loadError("http { server {\n health_check; } }"),
            "\"health_check\" directive is not allowed here in test.conf:2");
}

}  // namespace
}  // namespace tidegate::conf
