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
  ASSERT_TRUE(a.children[0]->ret);
  EXPECT_EQ(a.children[0]->ret->code, 204);
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
  ASSERT_TRUE(s.ret);
  EXPECT_EQ(s.ret->code, 418);
  EXPECT_FALSE(s.ret->has_text);
  const auto& r = s.locations.at(0)->ret;
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
  EXPECT_EQ(locs[0]->ret->code, 301);
  EXPECT_EQ(locs[0]->ret->text.raw, "https://x.test$request_uri");
  EXPECT_EQ(locs[1]->ret->code, 302);
  EXPECT_TRUE(locs[1]->ret->text.isConstant());
  EXPECT_EQ(locs[1]->ret->text.constantText(), "https://y.test/");
  EXPECT_EQ(locs[2]->ret->code, 302);
}

TEST(DirectiveReturnTest, Errors) {
  EXPECT_EQ(loadError(inServer("return 200 \"$nope\";")), "unknown \"nope\" variable in test.conf:3");
  EXPECT_EQ(loadError(inServer("return 1000;")), "invalid return code \"1000\" in test.conf:3");
  EXPECT_EQ(loadError(inServer("return ftp://x;")), "invalid return code \"ftp://x\" in test.conf:3");
  EXPECT_NE(loadError(inServer("return 200 a b;")).find("invalid number of arguments"), std::string::npos);
  EXPECT_NE(loadError("http { return 200; }").find("not allowed here"), std::string::npos);
}

}  // namespace
}  // namespace tidegate::conf
