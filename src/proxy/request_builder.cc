#include "proxy/request_builder.h"

#include <charconv>

#include "http/ascii.h"
#include "http/variables.h"

namespace tidegate::proxy {
namespace {

using http::iequals;

// Client headers never passed on as they came: the ones nginx's proxy
// module sets itself by default (Host, Connection, Content-Length,
// Transfer-Encoding, TE, Keep-Alive, Expect, Upgrade).
bool hopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return iequals(name, "te");
    case 4: return iequals(name, "host");
    case 6: return iequals(name, "expect");
    case 7: return iequals(name, "upgrade");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 14: return iequals(name, "content-length");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

bool overridden(const std::vector<conf::ProxyHeader>& set, std::string_view name) {
  for (const conf::ProxyHeader& h : set) {
    if (iequals(h.lower, name)) return true;
  }
  return false;
}

void appendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

// The part of $uri after the location's prefix, when proxy_pass's URI
// replaces that prefix (nginx's rule for prefix and exact locations).
size_t locationPrefixLength(const http::Request& r) {
  const conf::Location* loc = r.location;
  if (!loc) return 0;
  if (loc->match != conf::LocationMatch::kPrefix && loc->match != conf::LocationMatch::kNoRegex &&
      loc->match != conf::LocationMatch::kExact) {
    return 0;
  }
  if (r.uri.compare(0, loc->pattern.size(), loc->pattern) != 0) return 0;
  return loc->pattern.size();
}

void appendTarget(const http::Request& r, const ProxyTarget& t, std::string* out) {
  std::string_view args = r.query();
  if (t.from_variables && t.has_uri) {
    out->append(t.uri);  // nginx passes it as it is
    return;
  }
  if (t.has_uri) {
    out->append(t.uri);
    appendEscapedPath(std::string_view(r.uri).substr(locationPrefixLength(r)), out);
  } else if (!r.internal && !r.vars.argsReplaced()) {
    // The client's URI as received (nginx's unparsed_uri).
    std::string_view raw = r.head->target.in(r.base);
    if (!raw.empty() && raw[0] != '/') {
      // Absolute form: the path onwards.
      size_t scheme = raw.find("://");
      size_t slash = scheme == std::string_view::npos ? std::string_view::npos : raw.find('/', scheme + 3);
      raw = slash == std::string_view::npos ? std::string_view("/") : raw.substr(slash);
    }
    out->append(raw);
    return;
  } else {
    appendEscapedPath(r.uri, out);
  }
  if (r.has_args || r.vars.argsReplaced()) {
    if (!args.empty()) {
      out->push_back('?');
      out->append(args);
    }
  }
}

}  // namespace

std::string ProxyTarget::proxyHost() const {
  if (!port_given || port == (https ? 443 : 80)) return host;
  return host + ":" + std::to_string(port);
}

void appendEscapedPath(std::string_view path, std::string* out) {
  static const char kHex[] = "0123456789ABCDEF";
  for (char ch : path) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || c == '#' || c == '%' || c == '?') {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);
    }
  }
}

void buildRequest(const http::Request& r, const conf::ProxySettings& s, const ProxyTarget& t, BuiltRequest* out) {
  std::string& h = out->head;
  h.clear();
  h.reserve(1024);  // most heads: one allocation, not one per doubling
  bool http10 = s.http_version && *s.http_version == 10;
  h.append(r.method());
  h.push_back(' ');
  appendTarget(r, t, &h);
  h.append(http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");

  const std::vector<conf::ProxyHeader>& set = *s.set_headers;
  if (!overridden(set, "host")) appendHeader(&h, "Host", t.proxyHost());
  // tidegate pools by default: HTTP/1.1 without a Connection header keeps
  // the connection open. An explicit proxy_http_version 1.0 is nginx's
  // Connection: close.
  out->keepalive = !http10;
  if (http10 && !overridden(set, "connection")) appendHeader(&h, "Connection", "close");
  std::string value;
  for (const conf::ProxyHeader& ph : set) {
    value.clear();
    http::evaluate(ph.value, r, &value);
    if (value.empty()) continue;  // nginx: an empty value drops the header
    if (ph.lower == "connection") {
      out->keepalive = out->keepalive && !iequals(value, "close");
      out->upgrade = out->upgrade || iequals(value, "upgrade");
    }
    if (ph.lower == "content-length" || ph.lower == "transfer-encoding") continue;  // the body's framing is ours
    appendHeader(&h, ph.name, value);
  }
  bool pass_body = *s.pass_request_body;
  out->body_length = pass_body ? static_cast<int64_t>(r.body.size()) : 0;
  if (pass_body && r.body_streamed) {
    // Sent as it arrives: its declared length, or chunked when unknown.
    out->body_length = r.head->chunked ? -1 : r.head->content_length;
    if (out->body_length < 0) appendHeader(&h, "Transfer-Encoding", "chunked");
  }
  if (out->body_length > 0 || (pass_body && r.head->hasBody() && out->body_length == 0)) {
    char num[24];
    auto [end, ec] = std::to_chars(num, num + sizeof(num), out->body_length);
    appendHeader(&h, "Content-Length", std::string_view(num, static_cast<size_t>(end - num)));
  }
  if (*s.pass_request_headers) {
    r.forEachHeader([&](std::string_view name, std::string_view v) {
      if (!hopByHop(name) && !overridden(set, name)) appendHeader(&h, name, v);
      return true;
    });
  }
  if (out->upgrade) out->keepalive = false;
  h.append("\r\n");
}

}  // namespace tidegate::proxy
