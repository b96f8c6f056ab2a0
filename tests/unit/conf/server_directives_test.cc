// The server-block directives of core_directives.cc: listen, server_name,
// location and return.
#include <gtest/gtest.h>

#include <string>

#include "conf/loader.h"

namespace tidegate::conf {
namespace {

ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_TRUE(loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message() << "\n--- conf:\n" << text;
  return cfg;
}

std::string loadError(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_FALSE(loadConfigFromString(text, "/srv/tg", &cfg, &err)) << text;
  return err.message();
}

// Wraps server-level text; its first line is line 3 of test.conf.
std::string inServer(const std::string& body) { return "http {\nserver {\n" + body + "\n}\n}\n"; }

// The first return of a block's rewrite-module list.
const ReturnAction* returnOf(const std::vector<RewriteAction>& list) {
  for (const auto& a : list) {
    if (a.kind == RewriteAction::Kind::kReturn) return &a.ret;
  }
  return nullptr;
}

Listen listenOf(const std::string& args) {
  ConfigPtr cfg = load(inServer("listen " + args + ";"));
  if (!cfg) return Listen{};
  return cfg->http.servers.at(0)->listens.at(0);
}

// --- listen -------------------------------------------------------------------

TEST(DirectiveListenTest, AddressForms) {
  Listen port_only = listenOf("8080");
  EXPECT_EQ(port_only.host, "0.0.0.0");
  EXPECT_EQ(port_only.port, 8080);
  Listen host_port = listenOf("127.0.0.1:9000");
  EXPECT_EQ(host_port.host, "127.0.0.1");
  EXPECT_EQ(host_port.port, 9000);
  Listen host_only = listenOf("10.1.2.3");
  EXPECT_EQ(host_only.host, "10.1.2.3");
  EXPECT_EQ(host_only.port, 80);
  EXPECT_EQ(listenOf("*:81").host, "0.0.0.0");
  EXPECT_EQ(listenOf("localhost:82").host, "127.0.0.1");
  Listen v6 = listenOf("[::1]:8443");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 8443);
  EXPECT_TRUE(v6.ipv6());
  EXPECT_EQ(v6.key(), "[::1]:8443");
  Listen v6_default_port = listenOf("[::]");
  EXPECT_EQ(v6_default_port.host, "::");
  EXPECT_EQ(v6_default_port.port, 80);
}

TEST(DirectiveListenTest, Parameters) {
  Listen l = listenOf("8080 default_server reuseport backlog=128");
  EXPECT_TRUE(l.default_server);
  EXPECT_TRUE(l.reuseport);
  EXPECT_EQ(l.backlog, 128);
  EXPECT_TRUE(listenOf("8080 default").default_server);  // the old spelling
  Listen plain = listenOf("8080");
  EXPECT_FALSE(plain.default_server);
  EXPECT_FALSE(plain.reuseport);
  EXPECT_EQ(plain.backlog, 511);
}

TEST(DirectiveListenTest, InvalidAddressesAndParameters) {
  EXPECT_EQ(loadError(inServer("listen 70000;")), "invalid address \"70000\" in \"listen\" directive in test.conf:3");
  EXPECT_NE(loadError(inServer("listen 0;")).find("invalid address \"0\""), std::string::npos);
  EXPECT_NE(loadError(inServer("listen 127.0.0.1:http;")).find("invalid address"), std::string::npos);
  EXPECT_NE(loadError(inServer("listen :80;")).find("invalid address"), std::string::npos);
  EXPECT_NE(loadError(inServer("listen [::1;")).find("invalid address"), std::string::npos);
  EXPECT_NE(loadError(inServer("listen [::1]x;")).find("invalid address"), std::string::npos);
  EXPECT_EQ(loadError(inServer("listen 80 ssl_please;")), "invalid parameter \"ssl_please\" in test.conf:3");
  EXPECT_NE(loadError(inServer("listen 80 backlog=0;")).find("invalid parameter"), std::string::npos);
  EXPECT_NE(loadError(inServer("listen 80 backlog=x;")).find("invalid parameter"), std::string::npos);
}

// --- server_name ------------------------------------------------------------------

TEST(DirectiveServerNameTest, Kinds) {
  ConfigPtr cfg = load(inServer(
      "server_name Example.COM *.wild.com www.trail.* \"~^(?<sub>\\w+)\\.re\\.com$\";"));
  ASSERT_TRUE(cfg);
  const auto& names = cfg->http.servers[0]->names;
  ASSERT_EQ(names.size(), 4u);
  EXPECT_EQ(names[0].kind, ServerName::Kind::kExact);
  EXPECT_EQ(names[0].name, "example.com");  // lower-cased
  EXPECT_EQ(names[1].kind, ServerName::Kind::kLeadingWild);
  EXPECT_EQ(names[1].name, ".wild.com");
  EXPECT_EQ(names[2].kind, ServerName::Kind::kTrailingWild);
  EXPECT_EQ(names[2].name, "www.trail.");
  EXPECT_EQ(names[3].kind, ServerName::Kind::kRegex);
  ASSERT_TRUE(names[3].regex);
  EXPECT_TRUE(names[3].regex->matches("abc.re.com"));
  EXPECT_EQ(cfg->http.servers[0]->primaryName(), "example.com");
}

TEST(DirectiveServerNameTest, DotNameIsExactPlusWildcard) {
  ConfigPtr cfg = load(inServer("server_name .example.org;"));
  ASSERT_TRUE(cfg);
  const auto& names = cfg->http.servers[0]->names;
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].kind, ServerName::Kind::kExact);
  EXPECT_EQ(names[0].name, "example.org");
  EXPECT_EQ(names[1].kind, ServerName::Kind::kLeadingWild);
  EXPECT_EQ(names[1].name, ".example.org");
}

TEST(DirectiveServerNameTest, Errors) {
  EXPECT_EQ(loadError(inServer("server_name www.*.example.com;")),
            "invalid server name or wildcard \"www.*.example.com\" in test.conf:3");
  EXPECT_NE(loadError(inServer("server_name \"~^(unclosed\";")).find("pcre2_compile() failed"), std::string::npos);
  EXPECT_NE(loadError("http { server_name a; }").find("not allowed here"), std::string::npos);
}

// --- location -----------------------------------------------------------------

TEST(DirectiveLocationTest, Modifiers) {
  ConfigPtr cfg = load(inServer(
      "location /p { }\nlocation = /e { }\nlocation ^~ /n { }\nlocation ~ \"\\.php$\" { }\nlocation ~* \\.JPG$ { }"));
  ASSERT_TRUE(cfg);
  const auto& locs = cfg->http.servers[0]->locations;
  ASSERT_EQ(locs.size(), 5u);
  EXPECT_EQ(locs[0]->match, LocationMatch::kPrefix);
  EXPECT_EQ(locs[0]->pattern, "/p");
  EXPECT_EQ(locs[0]->where, "test.conf:3");
  EXPECT_EQ(locs[1]->match, LocationMatch::kExact);
  EXPECT_EQ(locs[1]->pattern, "/e");
  EXPECT_EQ(locs[2]->match, LocationMatch::kNoRegex);
  EXPECT_EQ(locs[3]->match, LocationMatch::kRegex);
  ASSERT_TRUE(locs[3]->regex);
  EXPECT_TRUE(locs[3]->regex->matches("/a.php"));
  EXPECT_FALSE(locs[3]->regex->matches("/a.PHP"));
  EXPECT_EQ(locs[4]->match, LocationMatch::kRegexCaseless);
  EXPECT_TRUE(locs[4]->regex->matches("/x.jpg"));
  EXPECT_EQ(locs[0]->regex, nullptr);
}

// Regression (fixed): nginx's ngx_http_core_location also accepts the modifier glued to the
// pattern when there is one argument ("=/exact", "^~/static", "~\.php$").
// core_directives.cc onLocation takes such a word as a plain prefix, so
// "location =/exact" silently becomes a prefix location that no URI starting
// with '/' can ever match.
TEST(DirectiveLocationTest, ModifierWithoutSpace) {
  ConfigPtr cfg = load(inServer("location =/exact { }\nlocation ^~/static { }"));
  ASSERT_TRUE(cfg);
  const auto& locs = cfg->http.servers[0]->locations;
  ASSERT_EQ(locs.size(), 2u);
  EXPECT_EQ(locs[0]->match, LocationMatch::kExact);
  EXPECT_EQ(locs[0]->pattern, "/exact");
  EXPECT_EQ(locs[1]->match, LocationMatch::kNoRegex);
  EXPECT_EQ(locs[1]->pattern, "/static");
}

TEST(DirectiveLocationTest, NestedLocationsAndSettings) {
  ConfigPtr cfg = load(inServer("location /a {\n  default_type x/a;\n  location /a/b { return 204; }\n"
                                "  location ~ \"\\.gif$\" { }\n}"));
  ASSERT_TRUE(cfg);
  const Location& a = *cfg->http.servers[0]->locations.at(0);
  EXPECT_EQ(a.settings.default_type, "x/a");
  ASSERT_EQ(a.children.size(), 2u);
  EXPECT_EQ(a.children[0]->pattern, "/a/b");
  ASSERT_TRUE(returnOf(a.children[0]->rewrite));
  EXPECT_EQ(returnOf(a.children[0]->rewrite)->code, 204);
  EXPECT_EQ(a.children[1]->match, LocationMatch::kRegex);
}

TEST(DirectiveLocationTest, Errors) {
  EXPECT_EQ(loadError(inServer("location ~~ /x { }")), "invalid location modifier \"~~\" in test.conf:3");
  EXPECT_NE(loadError(inServer("location @named { }")).find("named locations"), std::string::npos);
  EXPECT_EQ(loadError(inServer("location /a {\n  location /b { }\n}")),
            "location \"/b\" is outside location \"/a\" in test.conf:4");
  EXPECT_EQ(loadError(inServer("location = /a {\n  location /a/b { }\n}")),
            "location \"/a/b\" cannot be inside the exact location \"/a\" in test.conf:4");
  EXPECT_EQ(loadError(inServer("location /a { }\nlocation /a { }")), "duplicate location \"/a\" in test.conf:4");
  EXPECT_NE(loadError(inServer("location ~ \"(\" { }")).find("pcre2_compile() failed"), std::string::npos);
}

TEST(DirectiveLocationTest, ExactAndPrefixWithSameNameCoexist) {
  ConfigPtr cfg = load(inServer("location = /a { }\nlocation /a { }"));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.servers[0]->locations.size(), 2u);
}

// --- return ---------------------------------------------------------------------

TEST(DirectiveReturnTest, CodeAndText) {
  ConfigPtr cfg = load(inServer("return 418;\nlocation /t { return 200 \"hello $uri\"; }"));
  ASSERT_TRUE(cfg);
  const Server& s = *cfg->http.servers[0];
  ASSERT_TRUE(returnOf(s.rewrite));
  EXPECT_EQ(returnOf(s.rewrite)->code, 418);
  EXPECT_FALSE(returnOf(s.rewrite)->has_text);
  const auto& r = returnOf(s.locations.at(0)->rewrite);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
  EXPECT_TRUE(r->has_text);
  EXPECT_EQ(r->text.raw, "hello $uri");
  EXPECT_FALSE(r->text.isConstant());
}

TEST(DirectiveReturnTest, RedirectForms) {
  ConfigPtr cfg = load(inServer("location /a { return 301 https://x.test$request_uri; }\n"
                                "location /b { return https://y.test/; }\n"
                                "location /c { return $scheme://z.test; }"));
  ASSERT_TRUE(cfg);
  const auto& locs = cfg->http.servers[0]->locations;
  EXPECT_EQ(returnOf(locs[0]->rewrite)->code, 301);
  EXPECT_EQ(returnOf(locs[0]->rewrite)->text.raw, "https://x.test$request_uri");
  EXPECT_EQ(returnOf(locs[1]->rewrite)->code, 302);
  EXPECT_TRUE(returnOf(locs[1]->rewrite)->text.isConstant());
  EXPECT_EQ(returnOf(locs[1]->rewrite)->text.constantText(), "https://y.test/");
  EXPECT_EQ(returnOf(locs[2]->rewrite)->code, 302);
}

TEST(DirectiveReturnTest, Errors) {
  EXPECT_EQ(loadError(inServer("return 200 \"$nope\";")), "unknown \"nope\" variable in test.conf:3");
  EXPECT_EQ(loadError(inServer("return 1000;")), "invalid return code \"1000\" in test.conf:3");
  EXPECT_EQ(loadError(inServer("return ftp://x;")), "invalid return code \"ftp://x\" in test.conf:3");
  EXPECT_NE(loadError(inServer("return 200 a b;")).find("invalid number of arguments"), std::string::npos);
  EXPECT_NE(loadError("http { return 200; }").find("not allowed here"), std::string::npos);
}

// --- set and the rewrite-module list ------------------------------------------

TEST(DirectiveSetTest, ActionsKeepConfOrderPerBlock) {
  ConfigPtr cfg = load(inServer("set $a 1;\nreturn 200 $a;\nset $b \"$a-$uri\";\n"
                                "location /t { set $a x; return 204; }"));
  ASSERT_TRUE(cfg);
  const auto& list = cfg->http.servers[0]->rewrite;
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].kind, RewriteAction::Kind::kSet);
  EXPECT_EQ(list[0].target.id, VarId::kUser);
  EXPECT_EQ(list[0].value.constantText(), "1");
  EXPECT_EQ(list[0].where, "test.conf:3");
  EXPECT_EQ(list[1].kind, RewriteAction::Kind::kReturn);
  EXPECT_EQ(list[1].ret.text.parts.at(0).var.id, VarId::kUser);
  EXPECT_EQ(list[2].kind, RewriteAction::Kind::kSet);
  ASSERT_EQ(list[2].value.parts.size(), 3u);
  EXPECT_EQ(list[2].value.parts[0].var.index, list[0].target.index);
  EXPECT_EQ(list[2].value.parts[2].var.id, VarId::kUri);
  const auto& loc = cfg->http.servers[0]->locations.at(0)->rewrite;
  ASSERT_EQ(loc.size(), 2u);
  EXPECT_EQ(loc[0].target.index, list[0].target.index);  // one $a for the whole conf
  EXPECT_EQ(cfg->http.variables.names, (std::vector<std::string>{"a", "b"}));
}

TEST(DirectiveSetTest, VariablesDeclaredLaterAreKnownEverywhere) {
  // The log format and the first server use $later before any set declares it.
  ConfigPtr cfg = load("http {\nlog_format f '$later $other';\nserver { return 200 $later; }\n"
                       "server { location / { set $later 1; set_by_lua $other 'return 2'; } }\n}\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->http.log_formats.back()->format.parts.at(0).var.id, VarId::kUser);
  EXPECT_EQ(cfg->http.log_formats.back()->format.parts.at(2).var.name, "other");
  EXPECT_EQ(returnOf(cfg->http.servers[0]->rewrite)->text.parts.at(0).var.name, "later");
}

TEST(DirectiveSetTest, ArgsIsTheChangeableBuiltin) {
  ConfigPtr cfg = load(inServer("set $args a=1;\nset $arg_x shadow;\nreturn 200 $arg_x;"));
  ASSERT_TRUE(cfg);
  const auto& list = cfg->http.servers[0]->rewrite;
  EXPECT_EQ(list[0].target.id, VarId::kArgs);
  // A name of a prefix family becomes a user variable that shadows it (nginx).
  EXPECT_EQ(list[1].target.id, VarId::kUser);
  EXPECT_EQ(list[2].ret.text.parts.at(0).var.id, VarId::kUser);
}

TEST(DirectiveSetTest, Errors) {
  EXPECT_EQ(loadError(inServer("location / {\n  return 200 $nope;\n}")),
            "unknown \"nope\" variable in test.conf:4");
  EXPECT_EQ(loadError(inServer("set $a \"$nope\";")), "unknown \"nope\" variable in test.conf:3");
  EXPECT_EQ(loadError(inServer("set a 1;")), "invalid variable name \"a\" in test.conf:3");
  EXPECT_EQ(loadError(inServer("set $ 1;")), "invalid variable name \"$\" in test.conf:3");
  EXPECT_EQ(loadError(inServer("set $host 1;")), "the duplicate \"host\" variable in test.conf:3");
  EXPECT_EQ(loadError(inServer("set $a;")), "invalid number of arguments in \"set\" directive in test.conf:3");
  EXPECT_EQ(loadError("http {\nset $a 1;\n}"), "\"set\" directive is not allowed here in test.conf:2");
}

}  // namespace
}  // namespace tidegate::conf
