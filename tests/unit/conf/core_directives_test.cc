// Every directive in core_directives.cc: accepted values, what they set, and
// the nginx-style error for a bad value.
#include <gtest/gtest.h>

#include <string>

#include "conf/loader.h"

namespace tidegate::conf {
namespace {

constexpr const char* kPrefix = "/srv/tg";

ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_TRUE(loadConfigFromString(text, kPrefix, &cfg, &err)) << err.message() << "\n--- conf:\n" << text;
  return cfg;
}

std::string loadError(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_FALSE(loadConfigFromString(text, kPrefix, &cfg, &err)) << text;
  return err.message();
}

// Wraps server-level text; its first line is line 3 of test.conf.
std::string inServer(const std::string& body) { return "http {\nserver {\n" + body + "\n}\n}\n"; }

const Server& firstServer(const ConfigPtr& cfg) { return *cfg->http.servers.at(0); }

// --- main and events ------------------------------------------------------

TEST(DirectiveCoreTest, DaemonAndMasterProcess) {
  ConfigPtr cfg = load("daemon off;\nmaster_process off;\n");
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(cfg->daemon);
  EXPECT_FALSE(cfg->master_process);
  EXPECT_EQ(loadError("daemon maybe;"),
            "invalid value \"maybe\" in \"daemon\" directive, it must be \"on\" or \"off\" in test.conf:1");
}

TEST(DirectiveCoreTest, WorkerProcesses) {
  ConfigPtr cfg = load("worker_processes 4;");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->worker_processes, 4);
  ConfigPtr autocfg = load("worker_processes auto;");
  ASSERT_TRUE(autocfg);
  EXPECT_GE(autocfg->worker_processes, 1);
  EXPECT_EQ(loadError("\nworker_processes abc;"), "invalid value \"abc\" in \"worker_processes\" directive in test.conf:2");
  EXPECT_NE(loadError("worker_processes 0;").find("invalid value \"0\""), std::string::npos);
  EXPECT_NE(loadError("worker_processes 1025;").find("invalid value \"1025\""), std::string::npos);
}

TEST(DirectiveCoreTest, ErrorLogPathAndLevel) {
  ConfigPtr def = load("");
  ASSERT_TRUE(def);
  EXPECT_EQ(def->error_log, "/srv/tg/logs/error.log");
  EXPECT_EQ(def->error_log_level, "error");
  ConfigPtr rel = load("error_log var/e.log warn;");
  ASSERT_TRUE(rel);
  EXPECT_EQ(rel->error_log, "/srv/tg/var/e.log");
  EXPECT_EQ(rel->error_log_level, "warn");
  ConfigPtr abs = load("error_log /var/log/tg.log;");
  ASSERT_TRUE(abs);
  EXPECT_EQ(abs->error_log, "/var/log/tg.log");
  ConfigPtr err = load("error_log stderr debug;");
  ASSERT_TRUE(err);
  EXPECT_EQ(err->error_log, "stderr");
  EXPECT_EQ(err->error_log_level, "debug");
  EXPECT_EQ(loadError("error_log x.log loud;"), "invalid log level \"loud\" in test.conf:1");
}

TEST(DirectiveCoreTest, Pid) {
  ConfigPtr def = load("");
  ASSERT_TRUE(def);
  EXPECT_EQ(def->pid_file, "/srv/tg/logs/tidegate.pid");
  ConfigPtr rel = load("pid run/tg.pid;");
  ASSERT_TRUE(rel);
  EXPECT_EQ(rel->pid_file, "/srv/tg/run/tg.pid");
  ConfigPtr off = load("pid off;");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->pid_file, "");
}

TEST(DirectiveCoreTest, WorkerShutdownTimeout) {
  ConfigPtr cfg = load("worker_shutdown_timeout 1m5s;");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->worker_shutdown_timeout_ms, 65000u);
  EXPECT_EQ(loadError("worker_shutdown_timeout soon;"),
            "invalid value \"soon\" in \"worker_shutdown_timeout\" directive in test.conf:1");
}

TEST(DirectiveCoreTest, EventsWorkerConnections) {
  ConfigPtr def = load("events { }");
  ASSERT_TRUE(def);
  EXPECT_EQ(def->worker_connections, 512);
  ConfigPtr cfg = load("events {\n  worker_connections 4096;\n}");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->worker_connections, 4096);
  EXPECT_NE(loadError("events { worker_connections 1; }").find("invalid value \"1\""), std::string::npos);
  EXPECT_NE(loadError("events { worker_connections lots; }").find("invalid value \"lots\""), std::string::npos);
}

TEST(DirectiveCoreTest, DuplicateHttp) {
  EXPECT_EQ(loadError("http { }\nhttp { }\n"), "\"http\" directive is duplicate in test.conf:2");
}

TEST(DirectiveCoreTest, NoHttpBlock) {
  ConfigPtr cfg = load("daemon off;");
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(cfg->has_http);
  EXPECT_TRUE(cfg->listen_groups.empty());
}

// --- http-level values --------------------------------------------------------

TEST(DirectiveCoreTest, TimeoutsAndSizesAtHttpLevel) {
  ConfigPtr cfg = load(
      "http {\n keepalive_timeout 30s;\n keepalive_requests 7;\n client_header_timeout 5s;\n"
      " client_body_timeout 6s;\n send_timeout 7s;\n client_max_body_size 10m;\n server_tokens off;\n"
      " default_type application/octet-stream;\n}\n");
  ASSERT_TRUE(cfg);
  const HttpSettings& s = cfg->http.settings;
  EXPECT_EQ(s.keepalive_timeout_ms, 30000u);
  EXPECT_EQ(s.keepalive_requests, 7u);
  EXPECT_EQ(s.client_header_timeout_ms, 5000u);
  EXPECT_EQ(s.client_body_timeout_ms, 6000u);
  EXPECT_EQ(s.send_timeout_ms, 7000u);
  EXPECT_EQ(s.client_max_body_size, 10u * 1024 * 1024);
  EXPECT_EQ(s.server_tokens, false);
  EXPECT_EQ(s.default_type, "application/octet-stream");
}

TEST(DirectiveCoreTest, InvalidHttpValues) {
  EXPECT_EQ(loadError("http {\n keepalive_timeout 1x;\n}"),
            "invalid value \"1x\" in \"keepalive_timeout\" directive in test.conf:2");
  EXPECT_NE(loadError("http { keepalive_requests -1; }").find("invalid value \"-1\""), std::string::npos);
  EXPECT_NE(loadError("http { client_max_body_size 1x; }").find("\"client_max_body_size\""), std::string::npos);
  EXPECT_NE(loadError("http { send_timeout forever; }").find("\"send_timeout\""), std::string::npos);
  EXPECT_NE(loadError("http { server_tokens maybe; }").find("it must be \"on\" or \"off\""), std::string::npos);
}

TEST(DirectiveCoreTest, ClientMaxBodySizeZeroDisablesTheCheck) {
  ConfigPtr cfg = load("http { client_max_body_size 0; }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.settings.client_max_body_size, 0u);
}

TEST(DirectiveCoreTest, LargeClientHeaderBuffersAndMaxFields) {
  ConfigPtr cfg = load(
      "http {\n large_client_header_buffers 4 16k;\n client_max_header_fields 50;\n"
      " server { listen 8001; }\n server { listen 8002; large_client_header_buffers 2 1k; }\n}\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.limits.request_line, 16384u);
  EXPECT_EQ(cfg->http.limits.header_line, 16384u);
  EXPECT_EQ(cfg->http.limits.total, 65536u);
  EXPECT_EQ(cfg->http.limits.max_fields, 50u);
  const Server& inherits = *cfg->http.servers[0];
  EXPECT_EQ(inherits.limits.header_line, 16384u);
  EXPECT_EQ(inherits.limits.max_fields, 50u);
  const Server& own = *cfg->http.servers[1];
  EXPECT_EQ(own.limits.request_line, 1024u);
  EXPECT_EQ(own.limits.total, 2048u);
  EXPECT_EQ(own.limits.max_fields, 50u);
  EXPECT_NE(loadError("http { large_client_header_buffers 0 8k; }").find("large_client_header_buffers"),
            std::string::npos);
  EXPECT_NE(loadError("http { large_client_header_buffers 4 32; }").find("large_client_header_buffers"),
            std::string::npos);
  EXPECT_NE(loadError("http { client_max_header_fields 0; }").find("invalid value \"0\""), std::string::npos);
}

// Regression (fixed): core_directives.cc onServer copies st.http->limits when the server
// block is built, so an http-level large_client_header_buffers /
// client_max_header_fields written after a server block never reaches it.
// nginx merges http into server after the whole http block is read, so
// directive order inside http does not matter.
TEST(DirectiveCoreTest, HttpLimitsAfterServerBlockAreStillInherited) {
  ConfigPtr cfg = load("http {\n server { listen 8001; }\n large_client_header_buffers 4 16k;\n}\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(firstServer(cfg).limits.header_line, 16384u);
}

TEST(DirectiveCoreTest, DefaultHeadLimits) {
  ConfigPtr cfg = load(inServer("listen 8001;"));
  ASSERT_TRUE(cfg);
  const HeadLimits& l = firstServer(cfg).limits;
  EXPECT_EQ(l.request_line, 8192u);
  EXPECT_EQ(l.header_line, 8192u);
  EXPECT_EQ(l.total, 32768u);
  EXPECT_EQ(l.max_fields, 100u);
}

TEST(DirectiveCoreTest, LogFormat) {
  ConfigPtr cfg = load("http {\n log_format short '$remote_addr ' \"$status\";\n"
                       " log_format esc escape=default $request;\n}\n");
  ASSERT_TRUE(cfg);
  const auto& formats = cfg->http.log_formats;
  ASSERT_EQ(formats.size(), 3u);
  EXPECT_EQ(formats[0]->name, "combined");
  EXPECT_EQ(formats[1]->name, "short");
  EXPECT_EQ(formats[1]->format.raw, "$remote_addr $status");
  ASSERT_EQ(formats[1]->format.parts.size(), 3u);
  EXPECT_EQ(formats[2]->format.raw, "$request");
}

TEST(DirectiveCoreTest, LogFormatErrors) {
  EXPECT_EQ(loadError("http {\n log_format a x;\n log_format a y;\n}"),
            "duplicate \"log_format\" name \"a\" in test.conf:3");
  EXPECT_NE(loadError("http { log_format combined x; }").find("duplicate \"log_format\" name \"combined\""),
            std::string::npos);
  EXPECT_NE(loadError("http { log_format j escape=json $uri; }").find("escape=json"), std::string::npos);
  EXPECT_NE(loadError("http { log_format j escape=default; }").find("invalid number of arguments"), std::string::npos);
  EXPECT_EQ(loadError("http { log_format a \"$nope\"; }"), "unknown \"nope\" variable in test.conf:1");
  EXPECT_NE(loadError(inServer("log_format a x;")).find("not allowed here"), std::string::npos);
}

TEST(DirectiveCoreTest, AccessLog) {
  ConfigPtr cfg = load("http {\n log_format short $status;\n access_log logs/a.log;\n"
                       " access_log /var/log/b.log short;\n}\n");
  ASSERT_TRUE(cfg);
  const auto& logs = *cfg->http.settings.access_logs;
  ASSERT_EQ(logs.size(), 2u);
  EXPECT_EQ(logs[0].path, "/srv/tg/logs/a.log");
  EXPECT_EQ(logs[0].format->name, "combined");
  EXPECT_EQ(logs[1].path, "/var/log/b.log");
  EXPECT_EQ(logs[1].format->name, "short");
}

TEST(DirectiveCoreTest, AccessLogDefaultAndOff) {
  ConfigPtr def = load("http { }");
  ASSERT_TRUE(def);
  ASSERT_EQ(def->http.settings.access_logs->size(), 1u);
  EXPECT_EQ((*def->http.settings.access_logs)[0].path, "/srv/tg/logs/access.log");
  EXPECT_EQ((*def->http.settings.access_logs)[0].format->name, "combined");
  ConfigPtr off = load("http { access_log off; }");
  ASSERT_TRUE(off);
  ASSERT_TRUE(off->http.settings.access_logs.has_value());
  EXPECT_TRUE(off->http.settings.access_logs->empty());
}

TEST(DirectiveCoreTest, AccessLogErrors) {
  EXPECT_EQ(loadError("http {\n\n access_log logs/a.log nope;\n}"), "unknown log format \"nope\" in test.conf:3");
  EXPECT_NE(loadError("http { access_log off now; }").find("invalid parameter \"now\""), std::string::npos);
  EXPECT_NE(loadError("http { access_log a.log combined buffer=32k; }").find("are not supported yet"),
            std::string::npos);
}

TEST(DirectiveCoreTest, RequestBodySettings) {
  ConfigPtr cfg = load(
      "http {\n client_body_buffer_size 1k;\n lua_need_request_body on;\n"
      " server {\n  client_body_temp_path tmp/bodies/ 1 2;\n  location /a { client_body_buffer_size 32; }\n }\n}\n");
  ASSERT_TRUE(cfg);
  const HttpSettings& http = cfg->http.settings;
  EXPECT_EQ(http.client_body_buffer_size, 1024u);
  EXPECT_EQ(http.client_body_temp_path, cfg->prefix + "/client_body_temp");  // nginx's default, under the prefix
  const Server& server = *cfg->http.servers[0];
  EXPECT_EQ(server.settings.client_body_temp_path, cfg->prefix + "/tmp/bodies");
  EXPECT_EQ(server.settings.lua_need_request_body, true);
  const Location& loc = *server.locations[0];
  EXPECT_EQ(loc.settings.client_body_buffer_size, 32u);
  EXPECT_EQ(loc.settings.client_body_temp_path, cfg->prefix + "/tmp/bodies");
  ConfigPtr defaults = load("http { server { } }\n");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->http.servers[0]->settings.client_body_buffer_size, 16u * 1024);
  EXPECT_EQ(defaults->http.servers[0]->settings.lua_need_request_body, false);
  EXPECT_NE(loadError("http { client_body_temp_path a 3; }").find("invalid value \"3\""), std::string::npos);
  EXPECT_NE(loadError("http { lua_need_request_body maybe; }").find("it must be \"on\" or \"off\""), std::string::npos);
  EXPECT_NE(loadError("http { lua_need_request_body on; lua_need_request_body off; }").find("is duplicate"),
            std::string::npos);
}

}  // namespace
}  // namespace tidegate::conf
