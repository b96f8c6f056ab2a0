// The Lua runtime's directives: chunk names, package paths, duplicates.
#include <gtest/gtest.h>

#include "conf/loader.h"

namespace tidegate::conf {
namespace {

ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_TRUE(loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message();
  return cfg;
}

std::string loadError(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_FALSE(loadConfigFromString(text, "/srv/tg", &cfg, &err));
  return err.message();
}

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

}  // namespace
}  // namespace tidegate::conf
