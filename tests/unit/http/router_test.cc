// findServer and findLocation against nginx's documented selection rules
// (https://nginx.org/en/docs/http/server_names.html, ngx_http_core_module
// "location"). Configs are built from conf text so the tests read like the
// nginx docs' examples. Regexes are quoted so their backslashes survive.
#include "http/router.h"

#include <gtest/gtest.h>

#include <string>

#include "conf/loader.h"

namespace tidegate::http {
namespace {

using conf::ConfigPtr;

ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  conf::ConfError err;
  EXPECT_TRUE(conf::loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message() << "\n" << text;
  return cfg;
}

// --- findServer ---------------------------------------------------------------

class RouterServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = load(R"(http {
      server { listen 8001; server_name first.test; }
      server { listen 8001; server_name example.com www.example.com; }
      server { listen 8001; server_name *.example.com; }
      server { listen 8001; server_name *.deep.example.com; }
      server { listen 8001; server_name .example.org; }
      server { listen 8001; server_name www.example.*; }
      server { listen 8001; server_name "~^(?<user>[a-z]+)\.users\.test$"; }
      server { listen 8001; server_name "~^[a-z]+\.(example|users)\.test$"; }
      server { listen 8001; server_name "~^api\."; }
    })");
    ASSERT_TRUE(cfg_);
    ASSERT_EQ(cfg_->listen_groups.size(), 1u);
  }
  std::string pick(std::string_view host) {
    const conf::Server* s = findServer(cfg_->listen_groups[0], host);
    if (!s) return "<null>";
    return s->names.empty() ? "<unnamed>" : s->names[0].name;
  }
  ConfigPtr cfg_;
};

TEST_F(RouterServerTest, ExactName) {
  EXPECT_EQ(pick("example.com"), "example.com");
  EXPECT_EQ(pick("www.example.com"), "example.com");  // exact beats *.example.com
  EXPECT_EQ(pick("first.test"), "first.test");
}

TEST_F(RouterServerTest, HostIsCaseInsensitiveAndTrailingDotIgnored) {
  EXPECT_EQ(pick("WWW.Example.COM"), "example.com");
  EXPECT_EQ(pick("example.com."), "example.com");
}

TEST_F(RouterServerTest, LeadingWildcard) {
  EXPECT_EQ(pick("mail.example.com"), ".example.com");
  EXPECT_EQ(pick("a.b.example.com"), ".example.com");
  EXPECT_EQ(pick("x.deep.example.com"), ".deep.example.com");  // the longest wildcard wins
  EXPECT_EQ(pick("deep.example.com"), ".example.com");
}

TEST_F(RouterServerTest, DotNameMatchesDomainAndSubdomains) {
  EXPECT_EQ(pick("example.org"), "example.org");
  EXPECT_EQ(pick("www.example.org"), "example.org");
  EXPECT_EQ(pick("a.b.example.org"), "example.org");
  EXPECT_EQ(pick("notexample.org"), "first.test");
}

TEST_F(RouterServerTest, TrailingWildcard) {
  EXPECT_EQ(pick("www.example.net"), "www.example.");
  EXPECT_EQ(pick("www.example.co.uk"), "www.example.");
  EXPECT_EQ(pick("www.example"), "first.test");
}

TEST_F(RouterServerTest, RegexAfterWildcardsInConfOrder) {
  EXPECT_EQ(pick("alice.users.test"), "~^(?<user>[a-z]+)\\.users\\.test$");
  EXPECT_EQ(pick("bob.example.test"), "~^[a-z]+\\.(example|users)\\.test$");
  EXPECT_EQ(pick("Alice.Users.Test"), "~^(?<user>[a-z]+)\\.users\\.test$");
  // "api.example.com" matches *.example.com before any regex is tried.
  EXPECT_EQ(pick("api.example.com"), ".example.com");
  EXPECT_EQ(pick("api.other"), "~^api\\.");
}

TEST_F(RouterServerTest, NoMatchOrNoHostGoesToDefaultServer) {
  EXPECT_EQ(pick("unknown.invalid"), "first.test");
  EXPECT_EQ(pick(""), "first.test");
  EXPECT_EQ(pick("."), "first.test");
}

TEST(RouterServerDefaultTest, DefaultServerFlagOverridesFirst) {
  ConfigPtr cfg = load(R"(http {
    server { listen 8001; server_name a.test; }
    server { listen 8001 default_server; server_name b.test; }
  })");
  ASSERT_TRUE(cfg);
  const auto& g = cfg->listen_groups.at(0);
  EXPECT_EQ(findServer(g, "a.test")->primaryName(), "a.test");
  EXPECT_EQ(findServer(g, "zzz.test")->primaryName(), "b.test");
  EXPECT_EQ(findServer(g, "")->primaryName(), "b.test");
}

TEST(RouterServerDefaultTest, SingleServerTakesEveryHost) {
  ConfigPtr cfg = load("http { server { listen 8001; server_name only.test; } }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(findServer(cfg->listen_groups.at(0), "other.test"), cfg->http.servers[0].get());
}

// --- findLocation ---------------------------------------------------------------

std::string where(const conf::Server& s, std::string_view uri) {
  const conf::Location* l = findLocation(s, uri);
  if (!l) return "<none>";
  std::string mod;
  switch (l->match) {
    case conf::LocationMatch::kExact: mod = "= "; break;
    case conf::LocationMatch::kNoRegex: mod = "^~ "; break;
    case conf::LocationMatch::kRegex: mod = "~ "; break;
    case conf::LocationMatch::kRegexCaseless: mod = "~* "; break;
    case conf::LocationMatch::kPrefix: break;
  }
  return mod + l->pattern;
}

class RouterLocationTest : public ::testing::Test {
 protected:
  // The example from the nginx "location" documentation, plus a few more.
  void SetUp() override {
    cfg_ = load(R"(http { server {
      location = / { }
      location / { }
      location /documents/ { }
      location ^~ /images/ { }
      location ~* "\.(gif|jpg|jpeg)$" { }
      location /images/special/ { }
      location ~ "\.php$" { }
      location ~ "^/documents/.*\.txt$" { }
      location /documents/private/ {
        location = /documents/private/index { }
        location /documents/private/deeper/ { }
        location ~ "\.key$" { }
      }
      location /Case/ { }
    } })");
    ASSERT_TRUE(cfg_);
  }
  std::string at(std::string_view uri) { return where(*cfg_->http.servers.at(0), uri); }
  ConfigPtr cfg_;
};

TEST_F(RouterLocationTest, ExactMatchWins) {
  EXPECT_EQ(at("/"), "= /");  // configuration A in the nginx docs
  EXPECT_EQ(at("/index.html"), "/");  // B
}

TEST_F(RouterLocationTest, LongestPrefixRegardlessOfOrder) {
  EXPECT_EQ(at("/documents/document.html"), "/documents/");  // C
  EXPECT_EQ(at("/documents"), "/");
  EXPECT_EQ(at("/images/special/x.png"), "/images/special/");
}

TEST_F(RouterLocationTest, CaretTildeStopsRegexSearch) {
  EXPECT_EQ(at("/images/1.gif"), "^~ /images/");  // D
  EXPECT_EQ(at("/images/x.php"), "^~ /images/");
}

TEST_F(RouterLocationTest, RegexBeatsPlainPrefix) {
  EXPECT_EQ(at("/documents/1.jpg"), "~* \\.(gif|jpg|jpeg)$");  // E
  EXPECT_EQ(at("/a.php"), "~ \\.php$");
  // A longer plain prefix under a "^~" one is the longest match, so regexes are checked.
  EXPECT_EQ(at("/images/special/x.jpg"), "~* \\.(gif|jpg|jpeg)$");
}

TEST_F(RouterLocationTest, FirstMatchingRegexInConfOrder) {
  // Both the .jpg and the .txt regexes could match "/documents/a.txt.jpg"; the first wins.
  EXPECT_EQ(at("/documents/a.txt.jpg"), "~* \\.(gif|jpg|jpeg)$");
  EXPECT_EQ(at("/documents/a.txt"), "~ ^/documents/.*\\.txt$");
}

TEST_F(RouterLocationTest, CaseInsensitiveRegexOnlyForTildeStar) {
  EXPECT_EQ(at("/pics/A.JPG"), "~* \\.(gif|jpg|jpeg)$");
  EXPECT_EQ(at("/x.PHP"), "/");
  EXPECT_EQ(at("/case/x"), "/");  // prefixes are case-sensitive
  EXPECT_EQ(at("/Case/x"), "/Case/");
}

TEST_F(RouterLocationTest, NestedLocations) {
  EXPECT_EQ(at("/documents/private/a.html"), "/documents/private/");
  EXPECT_EQ(at("/documents/private/index"), "= /documents/private/index");
  EXPECT_EQ(at("/documents/private/deeper/x"), "/documents/private/deeper/");
  // A nested regex is tried before the outer regexes.
  EXPECT_EQ(at("/documents/private/a.key"), "~ \\.key$");
  // No nested regex matches: the outer regexes still apply.
  EXPECT_EQ(at("/documents/private/a.txt"), "~ ^/documents/.*\\.txt$");
  EXPECT_EQ(at("/documents/private/deeper/b.php"), "~ \\.php$");
}

TEST(RouterLocationEdgeTest, NoMatchingLocation) {
  ConfigPtr cfg = load("http { server { location /only/ { } location = /x { } } }");
  ASSERT_TRUE(cfg);
  const conf::Server& s = *cfg->http.servers[0];
  EXPECT_EQ(findLocation(s, "/other"), nullptr);
  EXPECT_EQ(findLocation(s, "/x/"), nullptr);
  EXPECT_EQ(where(s, "/x"), "= /x");
}

TEST(RouterLocationEdgeTest, RegexOnly) {
  ConfigPtr cfg = load(R"(http { server { location ~ "^/api/v[0-9]+/" { } } })");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(where(*cfg->http.servers[0], "/api/v2/users"), "~ ^/api/v[0-9]+/");
  EXPECT_EQ(findLocation(*cfg->http.servers[0], "/api/vx/"), nullptr);
}

// Regression (fixed): router.cc find() tests `best->match == kNoRegex` after `best` has been
// replaced by the nested match, so a "^~" location loses its effect as soon as
// a plain nested location matches. nginx takes noregex from the location
// matched at this level (ngx_http_core_find_location), so the outer regexes
// stay skipped.
TEST(RouterLocationEdgeTest, CaretTildeParentWithNestedPrefixStillStopsRegexes) {
  ConfigPtr cfg = load(R"(http { server {
    location ^~ /static/ { location /static/img/ { } }
    location ~ "\.png$" { }
  } })");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(where(*cfg->http.servers[0], "/static/a.png"), "^~ /static/");
  EXPECT_EQ(where(*cfg->http.servers[0], "/static/img/a.png"), "/static/img/");
}

// Regression (fixed): router.cc find() returns a matching regex location without looking at
// its children. nginx searches the nested locations of a matched regex
// location too ("look up nested locations" after ngx_http_regex_exec).
TEST(RouterLocationEdgeTest, NestedLocationInsideRegexLocation) {
  ConfigPtr cfg = load(R"(http { server {
    location ~ "^/app/" { location ~ "\.json$" { } }
  } })");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(where(*cfg->http.servers[0], "/app/x.html"), "~ ^/app/");
  EXPECT_EQ(where(*cfg->http.servers[0], "/app/x.json"), "~ \\.json$");
}

}  // namespace
}  // namespace tidegate::http
