// proxy_pass and the proxy_* settings: values, defaults, inheritance, the
// resolution of targets after the http block, and nginx's errors.
#include <gtest/gtest.h>

#include <string>

#include "conf/loader.h"
#include "load_util.h"

namespace tidegate::conf {
namespace {

// Wraps location-level text; its first line is line 4 of test.conf.
std::string inLocation(const std::string& body, const std::string& location = "/") {
  return "http {\nserver {\nlocation " + location + " {\n" + body + "\n}\n}\n}\n";
}

const Location& firstLocation(const ConfigPtr& cfg) { return *cfg->http.servers.at(0)->locations.at(0); }

const ProxyPass& passOf(const ConfigPtr& cfg) { return *firstLocation(cfg).proxy_pass; }

TEST(ProxyDirectivesTest, Defaults) {
  ConfigPtr cfg = load(inLocation(""));
  ASSERT_TRUE(cfg);
  const ProxySettings& p = firstLocation(cfg).settings.proxy;
  EXPECT_TRUE(p.set_headers->empty());
  EXPECT_TRUE(*p.pass_request_headers);
  EXPECT_TRUE(*p.pass_request_body);
  EXPECT_TRUE(p.hide_headers->empty());
  EXPECT_TRUE(p.pass_headers->empty());
  EXPECT_FALSE(p.http_version);  // unset: tidegate's 1.1 with pooled connections
  EXPECT_EQ(*p.connect_timeout_ms, 60000u);
  EXPECT_EQ(*p.send_timeout_ms, 60000u);
  EXPECT_EQ(*p.read_timeout_ms, 60000u);
  EXPECT_TRUE(*p.buffering);
  EXPECT_EQ(*p.buffer_size, 4096u);
  EXPECT_EQ(*p.buffers_number, 8u);
  EXPECT_EQ(*p.buffers_size, 4096u);
  EXPECT_TRUE(*p.request_buffering);
  EXPECT_EQ(*p.next_upstream, kNextError | kNextTimeout);
  EXPECT_EQ(*p.next_upstream_tries, 0u);
  EXPECT_EQ(*p.next_upstream_timeout_ms, 0u);
  EXPECT_FALSE(*p.intercept_errors);
  EXPECT_FALSE(*p.ignore_client_abort);
  EXPECT_FALSE(firstLocation(cfg).proxy_pass);
}

TEST(ProxyDirectivesTest, EverySettingInheritedFromHttp) {
  ConfigPtr cfg = load(
      "http {\n"
      " proxy_set_header Host $host;\n"
      " proxy_set_header X-Real-IP $remote_addr;\n"
      " proxy_pass_request_headers off;\n"
      " proxy_pass_request_body off;\n"
      " proxy_hide_header X-Powered-By;\n"
      " proxy_hide_header Server;\n"
      " proxy_pass_header X-Accel-Expires;\n"
      " proxy_http_version 1.0;\n"
      " proxy_connect_timeout 5s;\n"
      " proxy_send_timeout 1m;\n"
      " proxy_read_timeout 500ms;\n"
      " proxy_buffering OFF;\n"
      " proxy_buffer_size 8k;\n"
      " proxy_buffers 16 16k;\n"
      " proxy_request_buffering off;\n"
      " proxy_next_upstream error http_502;\n"
      " proxy_next_upstream_tries 3;\n"
      " proxy_next_upstream_timeout 10s;\n"
      " proxy_intercept_errors on;\n"
      " proxy_ignore_client_abort on;\n"
      " server { location / { } }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const ProxySettings& p = firstLocation(cfg).settings.proxy;
  ASSERT_EQ(p.set_headers->size(), 2u);
  EXPECT_EQ((*p.set_headers)[0].name, "Host");
  EXPECT_EQ((*p.set_headers)[0].lower, "host");
  EXPECT_EQ((*p.set_headers)[0].value.raw, "$host");
  EXPECT_EQ((*p.set_headers)[1].lower, "x-real-ip");
  EXPECT_FALSE(*p.pass_request_headers);
  EXPECT_FALSE(*p.pass_request_body);
  EXPECT_EQ(*p.hide_headers, (std::vector<std::string>{"x-powered-by", "server"}));
  EXPECT_EQ(*p.pass_headers, std::vector<std::string>{"x-accel-expires"});
  EXPECT_EQ(*p.http_version, 10);
  EXPECT_EQ(*p.connect_timeout_ms, 5000u);
  EXPECT_EQ(*p.send_timeout_ms, 60000u);
  EXPECT_EQ(*p.read_timeout_ms, 500u);
  EXPECT_FALSE(*p.buffering);
  EXPECT_EQ(*p.buffer_size, 8192u);
  EXPECT_EQ(*p.buffers_number, 16u);
  EXPECT_EQ(*p.buffers_size, 16384u);
  EXPECT_FALSE(*p.request_buffering);
  EXPECT_EQ(*p.next_upstream, kNextError | kNextHttp502);
  EXPECT_EQ(*p.next_upstream_tries, 3u);
  EXPECT_EQ(*p.next_upstream_timeout_ms, 10000u);
  EXPECT_TRUE(*p.intercept_errors);
  EXPECT_TRUE(*p.ignore_client_abort);
}

TEST(ProxyDirectivesTest, LevelsOverrideAndListsReplace) {
  ConfigPtr cfg = load(
      "http {\n"
      " proxy_set_header A 1; proxy_set_header B 2;\n"
      " proxy_hide_header X-A;\n"
      " proxy_read_timeout 5s;\n"
      " server {\n"
      "  proxy_set_header C 3;\n"
      "  proxy_http_version 1.1;\n"
      "  location /a { proxy_hide_header X-B; proxy_pass_header X-C; }\n"
      "  location /b { proxy_read_timeout 7s; location /b/c { proxy_set_header D $uri; } }\n"
      " }\n"
      "}\n");
  ASSERT_TRUE(cfg);
  const Server& server = *cfg->http.servers[0];
  const ProxySettings& s = server.settings.proxy;
  ASSERT_EQ(s.set_headers->size(), 1u);  // the server's list replaces http's
  EXPECT_EQ((*s.set_headers)[0].name, "C");
  EXPECT_EQ(*s.hide_headers, std::vector<std::string>{"x-a"});
  EXPECT_EQ(*s.http_version, 11);
  EXPECT_EQ(*s.read_timeout_ms, 5000u);

  const ProxySettings& a = server.locations[0]->settings.proxy;
  EXPECT_EQ((*a.set_headers)[0].name, "C");
  EXPECT_EQ(*a.hide_headers, std::vector<std::string>{"x-b"});
  EXPECT_EQ(*a.pass_headers, std::vector<std::string>{"x-c"});
  EXPECT_EQ(*a.http_version, 11);

  const Location& b = *server.locations[1];
  EXPECT_EQ(*b.settings.proxy.read_timeout_ms, 7000u);
  const ProxySettings& c = b.children[0]->settings.proxy;
  ASSERT_EQ(c.set_headers->size(), 1u);
  EXPECT_EQ((*c.set_headers)[0].name, "D");
  EXPECT_EQ(*c.read_timeout_ms, 7000u);  // from its parent location
  EXPECT_EQ(*c.hide_headers, std::vector<std::string>{"x-a"});
}

TEST(ProxyDirectivesTest, SetHeaderValues) {
  ConfigPtr cfg = load(inLocation(
      "proxy_set_header Accept-Encoding \"\";\n"
      "proxy_set_header X-Forwarded-Host \"$host:$server_port\";\n"
      "proxy_set_header X-Forwarded-Host again;"));
  ASSERT_TRUE(cfg);
  const auto& h = *firstLocation(cfg).settings.proxy.set_headers;
  ASSERT_EQ(h.size(), 3u);  // a repeated field is kept, as nginx does
  EXPECT_TRUE(h[0].value.raw.empty());  // empty: the header is not sent
  EXPECT_EQ(h[1].value.raw, "$host:$server_port");
  EXPECT_FALSE(h[1].value.isConstant());
  EXPECT_EQ(h[2].value.constantText(), "again");
}

TEST(ProxyDirectivesTest, NextUpstream) {
  auto bits = [](const std::string& body) {
    ConfigPtr cfg = load(inLocation(body));
    return cfg ? *firstLocation(cfg).settings.proxy.next_upstream : 0u;
  };
  EXPECT_EQ(bits("proxy_next_upstream timeout invalid_header http_500 http_503 http_504;"),
            kNextTimeout | kNextInvalidHeader | kNextHttp500 | kNextHttp503 | kNextHttp504);
  EXPECT_EQ(bits("proxy_next_upstream http_403 http_404 HTTP_429 non_idempotent;"),
            kNextHttp403 | kNextHttp404 | kNextHttp429 | kNextNonIdempotent);
  EXPECT_EQ(bits("proxy_next_upstream error error;"), kNextError);
  // As nginx's bitmask: a second directive adds to the first; `off` wins.
  EXPECT_EQ(bits("proxy_next_upstream error;\nproxy_next_upstream http_502;"), kNextError | kNextHttp502);
  EXPECT_EQ(bits("proxy_next_upstream off;"), kNextOff);
  EXPECT_EQ(bits("proxy_next_upstream error off timeout;"), kNextOff);
}

TEST(ProxyDirectivesTest, PassToUpstreamDefinedLater) {
  ConfigPtr cfg = load(
      "http {\n server { location / { proxy_pass http://Backend; } }\n"
      " upstream backend { server 127.0.0.1:8081; }\n}\n");
  ASSERT_TRUE(cfg);
  const ProxyPass& pp = passOf(cfg);
  EXPECT_EQ(pp.where, "test.conf:2");
  EXPECT_FALSE(pp.has_vars);
  EXPECT_FALSE(pp.https);
  EXPECT_EQ(pp.host, "Backend");  // as written; upstream names match case-insensitively
  EXPECT_FALSE(pp.port_given);
  EXPECT_FALSE(pp.has_uri);
  EXPECT_TRUE(pp.addresses.empty());  // the proxy takes the upstream by name
}

TEST(ProxyDirectivesTest, PassToAddresses) {
  ConfigPtr cfg = load(
      "http {\n server {\n"
      "  location /a/ { proxy_pass http://127.0.0.1:8080/api/; }\n"
      "  location /b { proxy_pass HTTP://127.0.0.1; }\n"
      "  location /c { proxy_pass http://[::1]:8081?x=1; }\n"
      "  location /d { proxy_pass http://localhost:8082/; }\n"
      "  location /e { location /e/f { proxy_pass http://127.0.0.2:99; } }\n"
      " }\n}\n");
  ASSERT_TRUE(cfg);
  const auto& locs = cfg->http.servers[0]->locations;
  const ProxyPass& a = *locs[0]->proxy_pass;
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 8080);
  EXPECT_TRUE(a.port_given);
  EXPECT_TRUE(a.has_uri);
  EXPECT_EQ(a.uri, "/api/");
  EXPECT_EQ(a.addresses, std::vector<std::string>{"127.0.0.1:8080"});
  const ProxyPass& b = *locs[1]->proxy_pass;
  EXPECT_EQ(b.port, 80);
  EXPECT_FALSE(b.port_given);
  EXPECT_FALSE(b.has_uri);
  EXPECT_EQ(b.addresses, std::vector<std::string>{"127.0.0.1:80"});
  const ProxyPass& c = *locs[2]->proxy_pass;
  EXPECT_EQ(c.host, "[::1]");
  EXPECT_EQ(c.uri, "?x=1");
  EXPECT_EQ(c.addresses, std::vector<std::string>{"[::1]:8081"});
  const ProxyPass& d = *locs[3]->proxy_pass;
  EXPECT_TRUE(d.has_uri);  // even "/": it replaces the location's prefix
  EXPECT_EQ(d.uri, "/");
  ASSERT_FALSE(d.addresses.empty());  // resolved at load
  for (const auto& addr : d.addresses) EXPECT_EQ(addr.substr(addr.size() - 5), ":8082") << addr;
  EXPECT_EQ(locs[4]->children[0]->proxy_pass->addresses, std::vector<std::string>{"127.0.0.2:99"});
}

TEST(ProxyDirectivesTest, UnresolvableNameIsNotAnError) {
  // It may exist later (an upstream created at run time): 502 until then.
  ConfigPtr cfg = load(inLocation("proxy_pass http://no-such-host.invalid:8080/x;"));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(passOf(cfg).host, "no-such-host.invalid");
  EXPECT_TRUE(passOf(cfg).addresses.empty());
}

TEST(ProxyDirectivesTest, PassWithVariables) {
  ConfigPtr cfg = load(inLocation("set $backend 127.0.0.1:8080;\nproxy_pass http://$backend$request_uri;", "~ ^/v"));
  ASSERT_TRUE(cfg);
  const ProxyPass& pp = passOf(cfg);
  EXPECT_TRUE(pp.has_vars);  // nothing else parsed: the URI part is allowed in a regex location
  EXPECT_EQ(pp.value.raw, "http://$backend$request_uri");
  EXPECT_TRUE(pp.host.empty());
  EXPECT_TRUE(pp.addresses.empty());
}

TEST(ProxyDirectivesTest, PassHttps) {
  ConfigPtr cfg = load(inLocation("proxy_pass HTTPS://127.0.0.1/x;"));
  ASSERT_TRUE(cfg);
  EXPECT_TRUE(passOf(cfg).https);
  EXPECT_EQ(passOf(cfg).port, 443);
  EXPECT_FALSE(passOf(cfg).port_given);
  cfg = load(inLocation("proxy_pass https://127.0.0.1:8443;"));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(passOf(cfg).port, 8443);
  cfg = load(inLocation("proxy_pass http://127.0.0.1;"));
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(passOf(cfg).https);
  EXPECT_EQ(passOf(cfg).port, 80);
}

// Verification is on by default (unlike nginx); the rest as nginx.
TEST(ProxyDirectivesTest, SslDefaultsAndInheritance) {
  ConfigPtr cfg = load(inLocation(""));
  ASSERT_TRUE(cfg);
  const ProxySettings& d = firstLocation(cfg).settings.proxy;
  EXPECT_TRUE(*d.ssl_verify);
  EXPECT_FALSE(d.ssl_trusted_certificate);
  EXPECT_EQ(*d.ssl_verify_depth, 1u);
  EXPECT_FALSE(*d.ssl_server_name);
  EXPECT_FALSE(d.ssl_name);
  EXPECT_FALSE(d.ssl_certificate);
  EXPECT_EQ(*d.ssl_protocols, kTlsV1_2 | kTlsV1_3);
  EXPECT_EQ(*d.ssl_ciphers, "DEFAULT");
  EXPECT_TRUE(*d.ssl_session_reuse);
  cfg = load("http {\n proxy_ssl_verify off; proxy_ssl_verify_depth 3;\n"
             " proxy_ssl_server_name on; proxy_ssl_name $host; proxy_ssl_protocols TLSv1.3;\n"
             " proxy_ssl_ciphers HIGH; proxy_ssl_session_reuse off;\n"
             " server { location / { } }\n}\n");
  ASSERT_TRUE(cfg);
  const ProxySettings& p = firstLocation(cfg).settings.proxy;
  EXPECT_FALSE(*p.ssl_verify);
  EXPECT_EQ(*p.ssl_verify_depth, 3u);
  EXPECT_TRUE(*p.ssl_server_name);
  EXPECT_EQ(p.ssl_name->raw, "$host");
  EXPECT_EQ(*p.ssl_protocols, kTlsV1_3);
  EXPECT_EQ(*p.ssl_ciphers, "HIGH");
  EXPECT_FALSE(*p.ssl_session_reuse);
}

TEST(ProxyDirectivesTest, SslErrors) {
  EXPECT_EQ(loadError(inLocation("proxy_ssl_verify maybe;")),
            "invalid value \"maybe\" in \"proxy_ssl_verify\" directive, it must be \"on\" or \"off\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_ssl_protocols TLSv9;")), "invalid value \"TLSv9\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_ssl_name $nope;")), "unknown \"nope\" variable in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_ssl_certificate /x.crt;")),
            "no \"proxy_ssl_certificate_key\" is defined for certificate \"/x.crt\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_ssl_certificate_key /x.key;")),
            "no \"proxy_ssl_certificate\" is defined for key \"/x.key\" in test.conf:4");
  // The files are loaded (the integration tests load real ones).
  std::string err = loadError(inLocation("proxy_ssl_trusted_certificate ca.pem;"));
  EXPECT_EQ(err.rfind("SSL_CTX_load_verify_locations(\"/srv/tg/ca.pem\") failed", 0), 0u) << err;
  EXPECT_NE(err.find(" in test.conf:4"), std::string::npos) << err;
  EXPECT_EQ(loadError(inLocation("proxy_ssl_verify on;\nproxy_ssl_verify off;")),
            "\"proxy_ssl_verify\" directive is duplicate in test.conf:5");
}

TEST(ProxyDirectivesTest, RegexLocationWithoutUri) {
  ConfigPtr cfg = load(inLocation("proxy_pass http://127.0.0.1:8080;", "~* \\.php$"));
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(passOf(cfg).has_uri);
}

TEST(ProxyDirectivesTest, PassErrors) {
  const std::string regex_uri =
      "\"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location, "
      "or inside \"if\" statement, or inside \"limit_except\" block in test.conf:4";
  EXPECT_EQ(loadError(inLocation("proxy_pass http://127.0.0.1/x;", "~ ^/a")), regex_uri);
  EXPECT_EQ(loadError(inLocation("proxy_pass http://127.0.0.1/;", "~* ^/a")), regex_uri);
  EXPECT_EQ(loadError(inLocation("proxy_pass http://127.0.0.1;\nproxy_pass http://127.0.0.2;")),
            "\"proxy_pass\" directive is duplicate in test.conf:5");
  EXPECT_EQ(loadError("http {\nserver {\nproxy_pass http://127.0.0.1;\n}\n}\n"),
            "\"proxy_pass\" directive is not allowed here in test.conf:3");
  EXPECT_EQ(loadError(inLocation("proxy_pass ftp://127.0.0.1;")), "invalid URL prefix in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass 127.0.0.1:8080;")), "invalid URL prefix in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://unix:/tmp/app.sock:/;")),
            "unix domain socket upstreams are not supported yet in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://127.0.0.1:99999/x;")),
            "invalid port in upstream \"127.0.0.1:99999/x\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://127.0.0.1:/x;")),
            "invalid port in upstream \"127.0.0.1:/x\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http:///x;")), "no host in upstream \"/x\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://[::zz]:80;")),
            "invalid IPv6 address in upstream \"[::zz]:80\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://[::1;")), "invalid host in upstream \"[::1\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_pass http://$nope;")), "unknown \"nope\" variable in test.conf:4");
  EXPECT_EQ(loadError("http {\n upstream backend { server 127.0.0.1:1; }\n"
                      " server { location / {\n proxy_pass http://BACKEND:8080/; } }\n}\n"),
            "upstream \"BACKEND\" may not have port 8080 in test.conf:4");
}

TEST(ProxyDirectivesTest, SettingErrors) {
  EXPECT_EQ(loadError(inLocation("proxy_set_header X;")),
            "invalid number of arguments in \"proxy_set_header\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_set_header X $nope;")), "unknown \"nope\" variable in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_buffering maybe;")),
            "invalid value \"maybe\" in \"proxy_buffering\" directive, it must be \"on\" or \"off\" in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_http_version 2.0;")),
            "invalid value \"2.0\" in \"proxy_http_version\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_read_timeout soon;")),
            "invalid value \"soon\" in \"proxy_read_timeout\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_buffer_size 4q;")),
            "invalid value \"4q\" in \"proxy_buffer_size\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_buffers 0 4k;")),
            "invalid value \"0\" in \"proxy_buffers\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_buffers 8 none;")),
            "invalid value \"none\" in \"proxy_buffers\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_buffers 8;")),
            "invalid number of arguments in \"proxy_buffers\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_next_upstream_tries -1;")),
            "invalid value \"-1\" in \"proxy_next_upstream_tries\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_next_upstream error http_418;")),
            "invalid value \"http_418\" in \"proxy_next_upstream\" directive in test.conf:4");
  EXPECT_EQ(loadError(inLocation("proxy_hide_header A B;")),
            "invalid number of arguments in \"proxy_hide_header\" directive in test.conf:4");
  EXPECT_EQ(loadError("proxy_read_timeout 5s;"), "\"proxy_read_timeout\" directive is not allowed here in test.conf:1");
}

TEST(ProxyDirectivesTest, SingleValueDuplicates) {
  const char* kTwice[] = {
      "proxy_pass_request_headers on",  "proxy_pass_request_body on", "proxy_http_version 1.1",
      "proxy_connect_timeout 1s",       "proxy_send_timeout 1s",      "proxy_read_timeout 1s",
      "proxy_buffering on",             "proxy_buffer_size 4k",       "proxy_buffers 8 4k",
      "proxy_request_buffering on",     "proxy_next_upstream_tries 1", "proxy_next_upstream_timeout 1s",
      "proxy_intercept_errors on",      "proxy_ignore_client_abort on",
  };
  for (const char* line : kTwice) {
    std::string name(line, std::string(line).find(' '));
    EXPECT_EQ(loadError(inLocation(std::string(line) + ";\n" + line + ";")),
              "\"" + name + "\" directive is duplicate in test.conf:5");
  }
  // Repeatable, as in nginx.
  EXPECT_TRUE(load(inLocation("proxy_hide_header A;\nproxy_hide_header A;\nproxy_pass_header B;\nproxy_pass_header C;")));
}

}  // namespace
}  // namespace tidegate::conf
