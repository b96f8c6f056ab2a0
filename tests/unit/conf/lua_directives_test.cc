// The Lua runtime's directives: chunk names, package paths, duplicates.
#include <gtest/gtest.h>

#include "conf/loader.h"
#include "load_util.h"

namespace tidegate::conf {
namespace {

TEST(LuaDirectivesTest, InlineChunkNamesFollowOpenResty) {
  ConfigPtr cfg = load("http {\n\n  init_by_lua_block {\n return 1 }\n  init_worker_by_lua 'x = 1';\n}\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.lua.init.kind, LuaCode::Kind::kInline);
  EXPECT_EQ(cfg->http.lua.init.chunkname, "=init_by_lua(test.conf:3)");
  EXPECT_EQ(cfg->http.lua.init.source, "\n return 1 ");
  EXPECT_EQ(cfg->http.lua.init_worker.chunkname, "=init_worker_by_lua(test.conf:5)");
  EXPECT_EQ(cfg->http.lua.init_worker.source, "x = 1");
}

TEST(LuaDirectivesTest, FileChunksAreRelativeToThePrefix) {
  ConfigPtr cfg = load("http { init_worker_by_lua_file lua/w.lua; init_by_lua_file /abs/i.lua; }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.lua.init_worker.kind, LuaCode::Kind::kFile);
  EXPECT_EQ(cfg->http.lua.init_worker.source, "/srv/tg/lua/w.lua");
  EXPECT_EQ(cfg->http.lua.init_worker.chunkname, "@/srv/tg/lua/w.lua");
  EXPECT_EQ(cfg->http.lua.init.source, "/abs/i.lua");
}

TEST(LuaDirectivesTest, PackagePathExpandsPrefix) {
  ConfigPtr cfg = load("http { lua_package_path '$prefix/lua/?.lua;;'; lua_package_cpath '/x/?.so'; }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.lua.package_path, "/srv/tg/lua/?.lua;;");
  EXPECT_EQ(cfg->http.lua.package_cpath, "/x/?.so");
  EXPECT_TRUE(cfg->http.lua.code_cache);
  EXPECT_FALSE(load("http { lua_code_cache off; }")->http.lua.code_cache);
}

TEST(LuaDirectivesTest, ContextsAndDuplicates) {
  EXPECT_EQ(loadError("http { init_by_lua_block { } init_by_lua 'x'; }"),
            "\"init_by_lua\" directive is duplicate in test.conf:1");
  EXPECT_EQ(loadError("http { server { init_worker_by_lua_block { } } }"),
            "\"init_worker_by_lua_block\" directive is not allowed here in test.conf:1");
  EXPECT_EQ(loadError("init_by_lua 'x';"), "\"init_by_lua\" directive is not allowed here in test.conf:1");
}

TEST(LuaDirectivesTest, FilterAndExitWorkerPhases) {
  ConfigPtr cfg = load("http {\n header_filter_by_lua 'a = 1';\n exit_worker_by_lua_block { }\n"
                       " server { location / {\n body_filter_by_lua_block { b = 1 }\n} } }\n");
  ASSERT_TRUE(cfg);
  const auto& loc = cfg->http.servers[0]->locations.at(0)->settings;
  ASSERT_TRUE(loc.header_filter_lua);  // inherited from http
  EXPECT_EQ(loc.header_filter_lua->chunkname, "=header_filter_by_lua(test.conf:2)");
  ASSERT_TRUE(loc.body_filter_lua);
  EXPECT_EQ(loc.body_filter_lua->chunkname, "=body_filter_by_lua(test.conf:5)");
  EXPECT_EQ(cfg->http.lua.exit_worker.chunkname, "=exit_worker_by_lua(test.conf:3)");
  EXPECT_EQ(loadError("http { server { exit_worker_by_lua 'x'; } }"),
            "\"exit_worker_by_lua\" directive is not allowed here in test.conf:1");
  EXPECT_EQ(loadError("http { body_filter_by_lua 'x'; body_filter_by_lua_block { } }"),
            "\"body_filter_by_lua_block\" directive is duplicate in test.conf:1");
}

TEST(LuaDirectivesTest, BalancerByLuaInsideUpstream) {
  ConfigPtr cfg = load(
      "http {\n"
      " upstream a {\n  server 0.0.0.1;\n  balancer_by_lua_block {\n   local b = 1 }\n }\n"
      " upstream b { server 127.0.0.1:1; balancer_by_lua 'x = 1'; }\n"
      " upstream c { server 127.0.0.1:1; balancer_by_lua_file lua/b.lua; }\n"
      " upstream d { server 127.0.0.1:1; }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const auto& ups = cfg->http.upstreams;
  EXPECT_EQ(ups[0]->balancer_lua.kind, LuaCode::Kind::kInline);
  EXPECT_EQ(ups[0]->balancer_lua.chunkname, "=balancer_by_lua(test.conf:4)");
  EXPECT_EQ(ups[0]->balancer_lua.source, "\n   local b = 1 ");
  EXPECT_EQ(ups[0]->servers.at(0).addresses, std::vector<std::string>{"0.0.0.1:80"});  // OpenResty's placeholder
  EXPECT_EQ(ups[1]->balancer_lua.chunkname, "=balancer_by_lua(test.conf:7)");
  EXPECT_EQ(ups[1]->balancer_lua.source, "x = 1");
  EXPECT_EQ(ups[2]->balancer_lua.kind, LuaCode::Kind::kFile);
  EXPECT_EQ(ups[2]->balancer_lua.source, "/srv/tg/lua/b.lua");
  EXPECT_TRUE(ups[3]->balancer_lua.empty());
}

TEST(LuaDirectivesTest, BalancerByLuaMayChooseEveryPeer) {
  // No server at all: the code sets every peer.
  ConfigPtr cfg = load("http { upstream a { balancer_by_lua 'x = 1'; } }");
  ASSERT_TRUE(cfg);
  EXPECT_TRUE(cfg->http.upstreams.at(0)->servers.empty());
  EXPECT_EQ(loadError("http {\n upstream a { keepalive 1; }\n}"), "no servers are inside upstream in test.conf:2");
}

TEST(LuaDirectivesTest, BalancerByLuaErrors) {
  EXPECT_EQ(loadError("http { server { location / {\n balancer_by_lua_block { } } } }"),
            "\"balancer_by_lua_block\" directive is not allowed here in test.conf:2");
  EXPECT_EQ(loadError("http {\n balancer_by_lua 'x'; }"),
            "\"balancer_by_lua\" directive is not allowed here in test.conf:2");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n balancer_by_lua 'x';\n balancer_by_lua_block { } } }"),
            "\"balancer_by_lua_block\" directive is duplicate in test.conf:3");
  EXPECT_EQ(loadError("http { upstream a { server 127.0.0.1:1;\n balancer_by_lua 'x' 'y'; } }"),
            "invalid number of arguments in \"balancer_by_lua\" directive in test.conf:2");
}

TEST(LuaDirectivesTest, TimerCapsAndClientAbort) {
  ConfigPtr dflt = load("http { server { } }");
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->http.lua.max_pending_timers, 1024u);
  EXPECT_EQ(dflt->http.lua.max_running_timers, 256u);
  EXPECT_FALSE(*dflt->http.servers[0]->settings.lua_check_client_abort);
  ConfigPtr cfg = load("http { lua_max_pending_timers 10; lua_max_running_timers 2; lua_check_client_abort on;"
                       " server { location / { lua_check_client_abort off; } } }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.lua.max_pending_timers, 10u);
  EXPECT_EQ(cfg->http.lua.max_running_timers, 2u);
  EXPECT_TRUE(*cfg->http.servers[0]->settings.lua_check_client_abort);
  EXPECT_FALSE(*cfg->http.servers[0]->locations.at(0)->settings.lua_check_client_abort);
  EXPECT_EQ(loadError("http { lua_max_pending_timers x; }"),
            "\"lua_max_pending_timers\" directive invalid number in test.conf:1");
  EXPECT_NE(loadError("http { lua_check_client_abort maybe; }").find("\"lua_check_client_abort\""), std::string::npos);
}

TEST(LuaDirectivesTest, SocketDefaultsAndUnderscores) {
  ConfigPtr dflt = load("http { server { } }");
  ASSERT_TRUE(dflt);
  const HttpSettings& d = dflt->http.servers[0]->settings;
  EXPECT_EQ(*d.lua_socket_connect_timeout_ms, 60000u);
  EXPECT_EQ(*d.lua_socket_read_timeout_ms, 60000u);
  EXPECT_EQ(*d.lua_socket_send_timeout_ms, 60000u);
  EXPECT_EQ(*d.lua_socket_keepalive_timeout_ms, 60000u);
  EXPECT_EQ(*d.lua_socket_buffer_size, 4096u);
  EXPECT_EQ(*d.lua_socket_pool_size, 30u);
  EXPECT_TRUE(*d.lua_socket_log_errors);
  EXPECT_TRUE(*d.lua_transform_underscores);
  ConfigPtr cfg = load("http { lua_socket_connect_timeout 5s; lua_socket_pool_size 100;"
                       " server { lua_socket_read_timeout 250ms; lua_socket_log_errors off;"
                       " lua_transform_underscores_in_response_headers off; } }");
  ASSERT_TRUE(cfg);
  const HttpSettings& s = cfg->http.servers[0]->settings;
  EXPECT_EQ(*s.lua_socket_connect_timeout_ms, 5000u);
  EXPECT_EQ(*s.lua_socket_pool_size, 100u);
  EXPECT_EQ(*s.lua_socket_read_timeout_ms, 250u);
  EXPECT_FALSE(*s.lua_socket_log_errors);
  EXPECT_FALSE(*s.lua_transform_underscores);
  EXPECT_EQ(loadError("http { lua_socket_read_timeout x; }"),
            "invalid value \"x\" in \"lua_socket_read_timeout\" directive in test.conf:1");
}

TEST(LuaDirectivesTest, SslSettingsDefaultsInheritanceAndErrors) {
  ConfigPtr dflt = load("http { server { } }");
  ASSERT_TRUE(dflt);
  const HttpSettings& d = dflt->http.servers[0]->settings;
  EXPECT_FALSE(d.lua_ssl_trusted_certificate);
  EXPECT_EQ(*d.lua_ssl_verify_depth, 1u);
  EXPECT_EQ(*d.lua_ssl_protocols, kTlsV1_2 | kTlsV1_3);
  EXPECT_EQ(*d.lua_ssl_ciphers, "DEFAULT");
  ConfigPtr cfg = load("http { lua_ssl_trusted_certificate ca.pem; lua_ssl_verify_depth 3;"
                       " server { lua_ssl_protocols TLSv1.2; location / { lua_ssl_ciphers HIGH; } } }");
  ASSERT_TRUE(cfg);
  const HttpSettings& l = cfg->http.servers[0]->locations.at(0)->settings;
  EXPECT_EQ(*l.lua_ssl_trusted_certificate, "/srv/tg/ca.pem");
  EXPECT_EQ(*l.lua_ssl_verify_depth, 3u);
  EXPECT_EQ(*l.lua_ssl_protocols, kTlsV1_2);
  EXPECT_EQ(*l.lua_ssl_ciphers, "HIGH");
  EXPECT_EQ(loadError("http { lua_ssl_protocols TLSv1.2 TLSv9; }"),
            "invalid value \"TLSv9\" in test.conf:1");
  EXPECT_EQ(loadError("http { lua_ssl_verify_depth x; }"),
            "invalid value \"x\" in \"lua_ssl_verify_depth\" directive in test.conf:1");
  EXPECT_EQ(loadError("http { lua_ssl_ciphers A; lua_ssl_ciphers B; }"),
            "\"lua_ssl_ciphers\" directive is duplicate in test.conf:1");
}

TEST(LuaDirectivesTest, RegexCacheAndMatchLimit) {
  ConfigPtr dflt = load("http { }");
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->http.lua.regex_cache_max_entries, 1024u);
  EXPECT_EQ(dflt->http.lua.regex_match_limit, 0u);
  ConfigPtr cfg = load("http { lua_regex_cache_max_entries 0; lua_regex_match_limit 100000; }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.lua.regex_cache_max_entries, 0u);
  EXPECT_EQ(cfg->http.lua.regex_match_limit, 100000u);
}

TEST(LuaDirectivesTest, RegexSettingsRejectBadValuesDuplicatesAndOtherContexts) {
  EXPECT_EQ(loadError("http { lua_regex_cache_max_entries 1k; }"),
            "\"lua_regex_cache_max_entries\" directive invalid number in test.conf:1");
  EXPECT_EQ(loadError("http { lua_regex_match_limit -1; }"),
            "\"lua_regex_match_limit\" directive invalid number in test.conf:1");
  EXPECT_EQ(loadError("http { lua_regex_match_limit 1; lua_regex_match_limit 2; }"),
            "\"lua_regex_match_limit\" directive is duplicate in test.conf:1");
  EXPECT_EQ(loadError("http { server { lua_regex_cache_max_entries 1; } }"),
            "\"lua_regex_cache_max_entries\" directive is not allowed here in test.conf:1");
  EXPECT_EQ(loadError("http { lua_regex_cache_max_entries; }"),
            "invalid number of arguments in \"lua_regex_cache_max_entries\" directive in test.conf:1");
}

TEST(LuaDirectivesTest, SetByLuaForms) {
  ConfigPtr cfg = load("http { server {\n"
                       "set_by_lua $a 'return \"$x\"' $arg_a \"${arg_b}!\";\n"
                       "location / {\n"
                       "  set_by_lua_block $b {\n return 1 }\n"
                       "  set_by_lua_file $c lua/c.lua $a;\n"
                       "  set $p lua/p.lua;\n"
                       "  set_by_lua_file $d $p;\n"
                       "} } }\n");
  ASSERT_TRUE(cfg);
  const RewriteAction& a = cfg->http.servers[0]->rewrite.at(0);
  EXPECT_EQ(a.kind, RewriteAction::Kind::kSetByLua);
  EXPECT_EQ(a.target.id, VarId::kUser);
  EXPECT_EQ(a.lua.kind, LuaCode::Kind::kInline);
  EXPECT_EQ(a.lua.source, "return \"$x\"");  // Lua code is not a complex value
  EXPECT_EQ(a.lua.chunkname, "=set_by_lua(test.conf:2)");
  ASSERT_EQ(a.lua_args.size(), 2u);
  EXPECT_EQ(a.lua_args[0].parts.at(0).var.id, VarId::kArg);
  EXPECT_EQ(a.lua_args[1].raw, "${arg_b}!");
  const auto& loc = cfg->http.servers[0]->locations.at(0)->rewrite;
  ASSERT_EQ(loc.size(), 4u);
  EXPECT_EQ(loc[0].lua.chunkname, "=set_by_lua(test.conf:4)");
  EXPECT_EQ(loc[0].lua.source, "\n return 1 ");
  EXPECT_TRUE(loc[0].lua_args.empty());
  EXPECT_EQ(loc[1].lua.kind, LuaCode::Kind::kFile);
  EXPECT_EQ(loc[1].lua.chunkname, "@/srv/tg/lua/c.lua");
  EXPECT_EQ(loc[1].lua_args.at(0).parts.at(0).var.index, a.target.index);
  // A path with variables is evaluated per request, against the prefix.
  EXPECT_TRUE(loc[3].lua.source.empty());
  ASSERT_TRUE(loc[3].lua.path);
  EXPECT_EQ(loc[3].lua.path->raw, "$p");
  EXPECT_EQ(loc[3].lua.prefix, "/srv/tg");
}

TEST(LuaDirectivesTest, SetByLuaErrors) {
  EXPECT_EQ(loadError("http { set_by_lua $a 'return 1'; }"),
            "\"set_by_lua\" directive is not allowed here in test.conf:1");
  EXPECT_EQ(loadError("http { server { set_by_lua $a; } }"),
            "invalid number of arguments in \"set_by_lua\" directive in test.conf:1");
  EXPECT_EQ(loadError("http { server {\n set_by_lua_block a { return 1 } } }"),
            "invalid variable name \"a\" in test.conf:2");
  EXPECT_EQ(loadError("http { server {\n set_by_lua_file $uri x.lua; } }"),
            "the duplicate \"uri\" variable in test.conf:2");
  EXPECT_EQ(loadError("http { server {\n set_by_lua $a 'return 1' $nope; } }"),
            "unknown \"nope\" variable in test.conf:2");
}

TEST(LuaDirectivesTest, ContentByFunctionAndSandboxSettings) {
  ConfigPtr cfg = load("http { lua_sandbox_instructions 5000; lua_sandbox_timeout 2s; lua_sandbox_memory 8m;\n"
                       " lua_sandbox_pcall on; lua_sandbox_shared_dicts a b; lua_sandbox_shared_dicts c;\n"
                       " lua_sandbox_modules m;\n"
                       " server { location = /a { content_by_function hello; }\n"
                       "   location ~ ^/fn/(\\w+)$ { content_by_function $1; }\n"
                       "   location /v { content_by_function $arg_f; } } }");
  ASSERT_TRUE(cfg);
  const SandboxConf& sc = cfg->http.lua.sandbox;
  const HttpSettings& loc_a = cfg->http.servers[0]->locations[0]->settings;
  EXPECT_EQ(loc_a.lua_sandbox_instructions, 5000u);
  EXPECT_EQ(loc_a.lua_sandbox_timeout_ms, 2000u);
  EXPECT_EQ(loc_a.lua_sandbox_memory, 8u << 20);
  EXPECT_TRUE(sc.pcall);
  EXPECT_EQ(sc.shared_dicts, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(sc.modules, std::vector<std::string>{"m"});
  const auto& locs = cfg->http.servers[0]->locations;
  ASSERT_EQ(locs.size(), 3u);
  EXPECT_EQ(locs[0]->content_lua.kind, LuaCode::Kind::kFunction);
  EXPECT_EQ(locs[0]->content_lua.source, "hello");
  EXPECT_EQ(locs[1]->content_lua.capture, 1);
  EXPECT_TRUE(locs[2]->content_lua.path);
  std::string name;
  EXPECT_TRUE(locs[1]->regex->capture("/fn/abc", 1, &name));
  EXPECT_EQ(name, "abc");
  EXPECT_FALSE(locs[1]->regex->capture("/x", 1, &name));
  EXPECT_EQ(loadError("http { server { location /a { content_by_function $1; } } }"),
            "\"$1\" in \"content_by_function\" needs a regex location in test.conf:1");
  EXPECT_EQ(loadError("http { server { location /a { content_by_lua_block { } content_by_function f; } } }"),
            "\"content_by_function\" directive is duplicate in test.conf:1");
  EXPECT_EQ(loadError("http { server { lua_sandbox_pcall on; } }"),
            "\"lua_sandbox_pcall\" directive is not allowed here in test.conf:1");
  // The budgets are per location, inherited, with their defaults at the top.
  cfg = load("http { server { lua_sandbox_timeout 1s; location /a { lua_sandbox_instructions 0; } location /b { } } }");
  ASSERT_TRUE(cfg);
  const HttpSettings& a = cfg->http.servers[0]->locations[0]->settings;
  const HttpSettings& b = cfg->http.servers[0]->locations[1]->settings;
  EXPECT_EQ(a.lua_sandbox_instructions, 0u);
  EXPECT_EQ(b.lua_sandbox_instructions, 10000000u);
  EXPECT_EQ(a.lua_sandbox_timeout_ms, 1000u);
  EXPECT_EQ(b.lua_sandbox_memory, 64u << 20);
  EXPECT_EQ(loadError("http { server { location / { lua_sandbox_memory 1m; lua_sandbox_memory 2m; } } }"),
            "\"lua_sandbox_memory\" directive is duplicate in test.conf:1");
}

}  // namespace
}  // namespace tidegate::conf
