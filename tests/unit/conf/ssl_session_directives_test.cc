// ssl_session_cache, ssl_session_tickets, ssl_session_timeout and
// ssl_session_ticket_key: syntax, errors, defaults and inheritance.
#include <gtest/gtest.h>

#include "load_util.h"

namespace tidegate::conf {
namespace {

std::string withHttp(const std::string& http, const std::string& server = "") {
  return "events {}\nhttp {\n" + http + "\nserver { listen 8080; " + server + " }\n}\n";
}

const SslSettings& sslOf(const ConfigPtr& cfg, size_t server = 0) { return cfg->http.servers[server]->settings.ssl; }

TEST(SslSessionDirectivesTest, Defaults) {
  ConfigPtr cfg = load(withHttp(""));
  ASSERT_TRUE(cfg);
  const SslSettings& s = sslOf(cfg);
  EXPECT_FALSE(s.session_cache->off);
  EXPECT_FALSE(s.session_cache->builtin);
  EXPECT_EQ(s.session_cache->zone, "");  // "none"
  EXPECT_TRUE(*s.session_tickets);
  EXPECT_EQ(*s.session_timeout_ms, 5u * 60 * 1000);
  EXPECT_TRUE(s.session_ticket_keys->empty());
}

TEST(SslSessionDirectivesTest, CacheForms) {
  ConfigPtr cfg = load(withHttp("ssl_session_cache builtin:1000 shared:SSL:1m;", "ssl_session_cache off;"));
  ASSERT_TRUE(cfg);
  EXPECT_TRUE(sslOf(cfg).session_cache->off);
  cfg = load(withHttp("ssl_session_cache builtin:1000 shared:SSL:1m;"));
  ASSERT_TRUE(cfg);
  const SslSessionCacheConf& c = *sslOf(cfg).session_cache;
  EXPECT_TRUE(c.builtin);
  EXPECT_EQ(c.builtin_size, 1000u);
  EXPECT_EQ(c.zone, "SSL");
  EXPECT_EQ(c.zone_size, 1024u * 1024);
  EXPECT_EQ(c.where, "test.conf:3");
}

TEST(SslSessionDirectivesTest, Errors) {
  EXPECT_EQ(loadError(withHttp("ssl_session_cache shared:SSL:16k;")),
            "session cache \"shared:SSL:16k\" is too small in test.conf:3");
  EXPECT_EQ(loadError(withHttp("ssl_session_cache shared:SSL;")), "invalid session cache \"shared:SSL\" in test.conf:3");
  EXPECT_EQ(loadError(withHttp("ssl_session_cache none builtin;")), "invalid session cache \"none\" in test.conf:3");
}

TEST(SslSessionDirectivesTest, ServersInheritTheHttpLevel) {
  ConfigPtr cfg = load(withHttp(
      "ssl_session_timeout 10m; ssl_session_tickets off; ssl_session_ticket_key k1; ssl_session_ticket_key /k2;"));
  ASSERT_TRUE(cfg);
  const SslSettings& s = sslOf(cfg);
  EXPECT_EQ(*s.session_timeout_ms, 10u * 60 * 1000);
  EXPECT_FALSE(*s.session_tickets);
  ASSERT_EQ(s.session_ticket_keys->size(), 2u);
  EXPECT_EQ((*s.session_ticket_keys)[1], "/k2");
  cfg = load(withHttp("ssl_session_ticket_key /k1;", "ssl_session_ticket_key /k3;"));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(*sslOf(cfg).session_ticket_keys, std::vector<std::string>{"/k3"});
}

}  // namespace
}  // namespace tidegate::conf
