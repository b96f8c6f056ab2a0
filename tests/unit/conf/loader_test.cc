// loadConfig / loadConfigFromString: paths, -g directives, nginx's defaults,
// http -> server -> location inheritance, and listen groups with their
// default servers.
#include "conf/loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "temp_dir_fixture.h"

namespace tidegate::conf {
namespace {

namespace fs = std::filesystem;

ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_TRUE(loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message() << "\n--- conf:\n" << text;
  return cfg;
}

// --- files and paths ------------------------------------------------------------

class LoaderFileTest : public testing_support::TempDirTest {
 protected:
  LoaderFileTest() : TempDirTest("tidegate-loader") {}
  bool run(const LoadOptions& opts) { return loadConfig(opts, &cfg_, &err_); }

  ConfigPtr cfg_;
  ConfError err_;
};

TEST_F(LoaderFileTest, DefaultConfFileUnderPrefix) {
  write("conf/tidegate.conf", "worker_processes 3;\n");
  ASSERT_TRUE(run(LoadOptions{dir_ + "/", "", ""})) << err_.message();
  EXPECT_EQ(cfg_->prefix, dir_);  // trailing '/' dropped
  EXPECT_EQ(cfg_->conf_file, dir_ + "/conf/tidegate.conf");
  EXPECT_EQ(cfg_->worker_processes, 3);
  EXPECT_EQ(cfg_->error_log, dir_ + "/logs/error.log");
}

TEST_F(LoaderFileTest, IncludeIsRelativeToTheConfFileDirectory) {
  write("etc/main.conf", "http {\n  include sites/*.conf;\n}\n");
  write("etc/sites/a.conf", "server { listen 8001; server_name a.test; }\n");
  write("etc/sites/b.conf", "server { listen 8001; server_name b.test; }\n");
  ASSERT_TRUE(run(LoadOptions{dir_, "etc/main.conf", ""})) << err_.message();
  ASSERT_EQ(cfg_->http.servers.size(), 2u);
  EXPECT_EQ(cfg_->http.servers[0]->primaryName(), "a.test");
  EXPECT_EQ(cfg_->http.servers[1]->where, dir_ + "/etc/sites/b.conf:1");
  ASSERT_EQ(cfg_->listen_groups.size(), 1u);
  EXPECT_EQ(cfg_->listen_groups[0].servers.size(), 2u);
}

TEST_F(LoaderFileTest, AbsoluteConfFile) {
  write("elsewhere/x.conf", "daemon off;\n");
  ASSERT_TRUE(run(LoadOptions{"/srv/unused", dir_ + "/elsewhere/x.conf", ""})) << err_.message();
  EXPECT_EQ(cfg_->conf_file, dir_ + "/elsewhere/x.conf");
  EXPECT_EQ(cfg_->prefix, "/srv/unused");
  EXPECT_FALSE(cfg_->daemon);
}

TEST_F(LoaderFileTest, MissingConfFile) {
  ASSERT_FALSE(run(LoadOptions{dir_, "nope.conf", ""}));
  EXPECT_NE(err_.message().find("open() \"" + dir_ + "/nope.conf\" failed"), std::string::npos);
}

TEST_F(LoaderFileTest, ErrorsNameTheIncludedFile) {
  write("conf/tidegate.conf", "http {\n  include bad.conf;\n}\n");
  write("conf/bad.conf", "\nkeepalive_timeout 1x;\n");
  ASSERT_FALSE(run(LoadOptions{dir_, "", ""}));
  EXPECT_EQ(err_.message(), "invalid value \"1x\" in \"keepalive_timeout\" directive in " + dir_ +
                                "/conf/bad.conf:2");
}

TEST_F(LoaderFileTest, CommandLineDirectivesApply) {
  write("conf/tidegate.conf", "worker_processes 2;\n");
  ASSERT_TRUE(run(LoadOptions{dir_, "", "daemon off; master_process off;"})) << err_.message();
  EXPECT_FALSE(cfg_->daemon);
  EXPECT_FALSE(cfg_->master_process);
  EXPECT_EQ(cfg_->worker_processes, 2);
}

TEST_F(LoaderFileTest, CommandLineErrorsSaySo) {
  write("conf/tidegate.conf", "\n");
  ASSERT_FALSE(run(LoadOptions{dir_, "", "bogus on;"}));
  EXPECT_EQ(err_.file, "command line");
  EXPECT_NE(err_.text.find("unknown directive \"bogus\""), std::string::npos);
}

TEST(LoaderStringTest, RelativePrefixBecomesAbsolute) {
  ConfigPtr cfg;
  ConfError err;
  ASSERT_TRUE(loadConfigFromString("", "some/rel/", &cfg, &err)) << err.message();
  EXPECT_EQ(cfg->prefix, fs::current_path().string() + "/some/rel");
  EXPECT_EQ(cfg->conf_file, cfg->prefix + "/test.conf");
}

// --- defaults and inheritance -------------------------------------------------------

TEST(LoaderInheritTest, NginxDefaultsReachEveryLevel) {
  ConfigPtr cfg = load("http {\n server {\n  location / {\n   location /x { }\n  }\n }\n}\n");
  ASSERT_TRUE(cfg);
  const Server& s = *cfg->http.servers.at(0);
  const Location& nested = *s.locations.at(0)->children.at(0);
  const std::vector<const HttpSettings*> levels{&cfg->http.settings, &s.settings, &s.locations[0]->settings,
                                                &nested.settings};
  for (const HttpSettings* st : levels) {
    EXPECT_EQ(st->keepalive_timeout_ms, 75000u);
    EXPECT_EQ(st->keepalive_requests, 1000u);
    EXPECT_EQ(st->client_max_body_size, 1024u * 1024);
    EXPECT_EQ(st->default_type, "text/plain");
    EXPECT_EQ(st->client_header_timeout_ms, 60000u);
    EXPECT_EQ(st->client_body_timeout_ms, 60000u);
    EXPECT_EQ(st->send_timeout_ms, 60000u);
    EXPECT_EQ(st->server_tokens, true);
    ASSERT_TRUE(st->access_logs.has_value());
    ASSERT_EQ(st->access_logs->size(), 1u);
    EXPECT_EQ((*st->access_logs)[0].path, "/srv/tg/logs/access.log");
  }
}

TEST(LoaderInheritTest, HttpValuesInheritedUnlessOverridden) {
  ConfigPtr cfg = load(
      "http {\n"
      " client_max_body_size 5m;\n keepalive_timeout 10s;\n default_type text/html;\n"
      " access_log logs/http.log;\n"
      " server {\n  listen 8001;\n"
      "  location /inherit { }\n"
      "  location /own {\n   client_max_body_size 1k;\n   keepalive_timeout 2s;\n"
      "   default_type application/json;\n   access_log off;\n  }\n }\n"
      " server {\n  listen 8002;\n  keepalive_timeout 20s;\n  access_log /var/s2.log;\n"
      "  location / { }\n }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const Server& s1 = *cfg->http.servers[0];
  EXPECT_EQ(s1.settings.client_max_body_size, 5u * 1024 * 1024);
  EXPECT_EQ(s1.settings.keepalive_timeout_ms, 10000u);
  EXPECT_EQ(s1.settings.default_type, "text/html");
  ASSERT_EQ(s1.settings.access_logs->size(), 1u);
  EXPECT_EQ((*s1.settings.access_logs)[0].path, "/srv/tg/logs/http.log");

  const HttpSettings& inherit = s1.locations[0]->settings;
  EXPECT_EQ(inherit.client_max_body_size, 5u * 1024 * 1024);
  EXPECT_EQ(inherit.keepalive_timeout_ms, 10000u);
  EXPECT_EQ(inherit.default_type, "text/html");
  EXPECT_EQ((*inherit.access_logs)[0].path, "/srv/tg/logs/http.log");

  const HttpSettings& own = s1.locations[1]->settings;
  EXPECT_EQ(own.client_max_body_size, 1024u);
  EXPECT_EQ(own.keepalive_timeout_ms, 2000u);
  EXPECT_EQ(own.default_type, "application/json");
  ASSERT_TRUE(own.access_logs.has_value());
  EXPECT_TRUE(own.access_logs->empty());

  const Server& s2 = *cfg->http.servers[1];
  EXPECT_EQ(s2.settings.keepalive_timeout_ms, 20000u);
  EXPECT_EQ(s2.settings.client_max_body_size, 5u * 1024 * 1024);
  ASSERT_EQ(s2.settings.access_logs->size(), 1u);
  EXPECT_EQ((*s2.settings.access_logs)[0].path, "/var/s2.log");
  EXPECT_EQ(s2.locations[0]->settings.keepalive_timeout_ms, 20000u);
  EXPECT_EQ((*s2.locations[0]->settings.access_logs)[0].path, "/var/s2.log");
}

TEST(LoaderInheritTest, NestedLocationInheritsFromItsParentLocation) {
  ConfigPtr cfg = load("http { server {\n location /a {\n  default_type a/a;\n  send_timeout 3s;\n"
                       "  location /a/b { send_timeout 4s; }\n } } }\n");
  ASSERT_TRUE(cfg);
  const Location& b = *cfg->http.servers[0]->locations[0]->children[0];
  EXPECT_EQ(b.settings.default_type, "a/a");
  EXPECT_EQ(b.settings.send_timeout_ms, 4000u);
}

TEST(LoaderInheritTest, HttpValueAfterServerBlockStillInherited) {
  // nginx merges after the whole http block is read: order does not matter.
  ConfigPtr cfg = load("http {\n server { location / { } }\n client_max_body_size 2m;\n}\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.servers[0]->settings.client_max_body_size, 2u * 1024 * 1024);
  EXPECT_EQ(cfg->http.servers[0]->locations[0]->settings.client_max_body_size, 2u * 1024 * 1024);
}

TEST(LoaderInheritTest, AccessLogUsesNamedFormatDownTheTree) {
  ConfigPtr cfg = load("http {\n log_format tiny $status;\n access_log logs/t.log tiny;\n"
                       " server { location / { } }\n}\n");
  ASSERT_TRUE(cfg);
  const auto& logs = *cfg->http.servers[0]->locations[0]->settings.access_logs;
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0].format->name, "tiny");
}

// --- listen groups ---------------------------------------------------------------------

TEST(LoaderListenTest, ServersSharingAnAddressFormOneGroup) {
  ConfigPtr cfg = load("http {\n server { listen 8001; server_name a; }\n server { listen *:8001; server_name b; }\n"
                       " server { listen 0.0.0.0:8001; server_name c; }\n server { listen 8002; server_name d; }\n}\n");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 2u);
  const auto& g1 = cfg->listen_groups[0];
  EXPECT_EQ(g1.listen.key(), "0.0.0.0:8001");
  ASSERT_EQ(g1.servers.size(), 3u);
  EXPECT_EQ(g1.servers[1]->primaryName(), "b");
  EXPECT_EQ(g1.default_server->primaryName(), "a");  // first one wins without default_server
  EXPECT_EQ(cfg->listen_groups[1].listen.port, 8002);
  EXPECT_EQ(cfg->listen_groups[1].default_server->primaryName(), "d");
}

TEST(LoaderListenTest, ServerWithoutListenUsesPort80) {
  ConfigPtr cfg = load("http { server { server_name x; } }");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 1u);
  EXPECT_EQ(cfg->listen_groups[0].listen.key(), "0.0.0.0:80");
  EXPECT_EQ(cfg->http.servers[0]->listens.size(), 1u);
}

TEST(LoaderListenTest, ServerWithTwoListensJoinsTwoGroups) {
  ConfigPtr cfg = load("http { server { listen 8001; listen 127.0.0.1:8002; server_name both; } }");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 2u);
  EXPECT_EQ(cfg->listen_groups[1].listen.key(), "127.0.0.1:8002");
  EXPECT_EQ(cfg->listen_groups[0].default_server, cfg->listen_groups[1].default_server);
}

TEST(LoaderListenTest, DifferentHostsSamePortAreDifferentGroups) {
  ConfigPtr cfg = load("http { server { listen 127.0.0.1:8001; } server { listen 8001; } server { listen [::1]:8001; } }");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 3u);
  EXPECT_EQ(cfg->listen_groups[2].listen.key(), "[::1]:8001");
}

TEST(LoaderListenTest, DefaultServerFlagPicksTheDefault) {
  ConfigPtr cfg = load("http {\n server { listen 8001; server_name a; }\n"
                       " server { listen 8001 default_server; server_name b; }\n"
                       " server { listen 8002; server_name c; }\n"
                       " server { listen 8002 default_server; server_name d; }\n}\n");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 2u);
  EXPECT_EQ(cfg->listen_groups[0].default_server->primaryName(), "b");
  EXPECT_EQ(cfg->listen_groups[1].default_server->primaryName(), "d");
}

TEST(LoaderListenTest, GroupMergesReuseportAndBacklog) {
  ConfigPtr cfg = load("http { server { listen 8001; } server { listen 8001 reuseport backlog=64; } }");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->listen_groups.size(), 1u);
  EXPECT_TRUE(cfg->listen_groups[0].listen.reuseport);
  EXPECT_EQ(cfg->listen_groups[0].listen.backlog, 64);
}

TEST(LoaderListenTest, DuplicateDefaultServer) {
  ConfigPtr cfg;
  ConfError err;
  ASSERT_FALSE(loadConfigFromString("http {\n server { listen 8080 default_server; }\n server {\n"
                                    "  listen 8080 default_server;\n }\n}\n",
                                    "/srv/tg", &cfg, &err));
  EXPECT_EQ(err.text, "a duplicate default server for 0.0.0.0:8080");
  EXPECT_EQ(err.file, "test.conf");
  // nginx points at the listen line (4); pointing at the second server (3) is acceptable too.
  EXPECT_TRUE(err.line == 3 || err.line == 4) << err.line;
}

}  // namespace
}  // namespace tidegate::conf

namespace tidegate::conf {
namespace {

// nginx binds only the wildcard when a port also has specific addresses;
// those are served through it, picked by the connection's local address.
TEST(LoaderListenTest, SpecificAddressRidesOnWildcardOfSamePort) {
  ConfigPtr cfg;
  ConfError err;
  ASSERT_TRUE(loadConfigFromString(R"(
http {
  server { listen 8080 default_server; }
  server { listen 127.0.0.2:8080; }
  server { listen 127.0.0.3:9090; }
}
)",
                                   "/srv/tg", &cfg, &err))
      << err.message();
  ASSERT_EQ(cfg->listen_groups.size(), 3u);
  EXPECT_EQ(cfg->listen_groups[0].listen.key(), "0.0.0.0:8080");
  EXPECT_EQ(cfg->listen_groups[0].via, -1);
  EXPECT_EQ(cfg->listen_groups[1].listen.key(), "127.0.0.2:8080");
  EXPECT_EQ(cfg->listen_groups[1].via, 0);
  EXPECT_EQ(cfg->listen_groups[2].via, -1);  // no wildcard on 9090: bound itself
}

}  // namespace
}  // namespace tidegate::conf
