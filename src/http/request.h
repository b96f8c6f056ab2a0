// One request on a downstream connection: the parsed head (views into the
// connection buffer), the routing result and the response bookkeeping that
// variables and the access log read.
#pragma once

#include <uv.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "http/request_body.h"
#include "http/request_head.h"
#include "http/request_variables.h"

namespace tidegate::http {

struct ConnInfo {
  uv_loop_t* loop = nullptr;
  uint64_t id = 0;
  uint64_t requests = 0;  // requests served on this connection, this one included
  std::string remote_addr;
  uint16_t remote_port = 0;
  std::string local_addr;
  uint16_t local_port = 0;
  // TLS (null protocol: a plain connection). The strings are OpenSSL's
  // static names ("TLSv1.3", "TLS_AES_128_GCM_SHA256").
  const char* ssl_protocol = nullptr;
  const char* ssl_cipher = nullptr;
  std::string ssl_server_name;  // the SNI the client sent, lower-cased
  bool ssl_session_reused = false;
};

// One try of the proxy (nginx's upstream state), for $upstream_*.
struct UpstreamTry {
  std::string addr;          // "ip:port"; the upstream's name when no peer was usable
  int status = 0;            // the upstream's status; 502/504 for a try that failed before one
  int64_t connect_us = -1;   // -1: not measured ("-")
  int64_t header_us = -1;
  int64_t response_us = -1;
  int64_t length = 0;        // response body bytes received from the upstream
};

// What the proxy did for a request, for $upstream_*, $proxy_host and
// $upstream_http_NAME. `tries` is empty when the request was not proxied.
struct UpstreamRecord {
  std::vector<UpstreamTry> tries;
  std::string proxy_host;    // $proxy_host: the upstream name or host[:port] of proxy_pass
  std::string proxy_port;    // $proxy_port
  using Field = std::pair<std::string, std::string>;

  // The last response head's headers, as received (lower-case not assumed).
  std::span<const Field> headers() const { return {fields_.data(), field_count_}; }
  void setHeaders(std::vector<Field> fields) {
    fields_ = std::move(fields);
    field_count_ = fields_.size();
    fields_bytes_ = 0;
    for (const auto& [name, value] : fields_) fields_bytes_ += name.capacity() + value.capacity();
  }
  // `swap(vector, bytes)` puts the new headers in the vector it is given,
  // and the heap their strings hold in `bytes`, and takes what was in both.
  // A cleared record's strings are still in the vector: their capacity
  // serves whoever fills it next (the proxy's parser, which keeps count of
  // that heap without reading the strings again).
  template <class Swap>
  void exchangeHeaders(Swap&& swap) {
    swap(fields_, fields_bytes_);
    field_count_ = fields_.size();
  }
  // The request ended: its headers' vector, strings and all, goes to the
  // worker's spares (unless they are full or it grew large), on top. The
  // next head parsed on any connection fills it (takeSpareHeaders) while
  // it is still in cache; the record's own, kept from its connection's
  // last request, would be cold when a thousand connections take turns
  // (bench/cache_misses.sh).
  void releaseHeaders();
  // The spare released last, into an empty `out`; false (nothing changed)
  // if there is none.
  static bool takeSpareHeaders(std::vector<Field>* out);
  void clear() {
    tries.clear();
    proxy_host.clear();
    proxy_port.clear();
    field_count_ = 0;
  }

 private:
  std::vector<Field> fields_;  // [0, field_count_) are the headers
  size_t field_count_ = 0;
  size_t fields_bytes_ = 0;    // the heap the strings of fields_ hold
};

// nginx's NGX_HTTP_MAX_URI_CHANGES: internal redirects and location jumps
// one request may make before it is a "rewrite or internal redirection cycle".
constexpr int kMaxUriChanges = 10;

// Everything a request holds but its body: what a copy takes
// (DetachedRequest).
struct RequestFields {
  const char* base = nullptr;  // the connection buffer the head's slices point into
  const RequestHead* head = nullptr;
  const ConnInfo* conn = nullptr;
  const conf::Server* server = nullptr;
  const conf::Location* location = nullptr;
  std::string uri;             // normalised, decoded path ($uri)
  Slice args;                  // raw query ($args), in the buffer like the head's slices
  bool has_args = false;
  std::string host;            // lower-cased, without port, from Host or an absolute-form target
  int status = 0;
  uint64_t bytes_sent = 0;
  uint64_t body_bytes_sent = 0;
  uint64_t request_length = 0;
  // The loop's cached clock (ms), as nginx's request times use its cached time:
  // no clock read per request.
  uint64_t start_ms = 0;
  // Response headers already decided (for $sent_http_*): only the ones we make.
  std::string_view sent_content_type;
  std::string sent_location;
  int64_t sent_content_length = -1;
  // What set, set_by_lua* and ngx.var writes assigned. Mutable: handlers
  // see the request as const, and assigning a variable is the one change
  // nginx lets them make to it.
  mutable RequestVariables vars;

  // False while the body is still arriving and the Lua phases already run
  // (they start once the head is read; ngx.req.read_body waits for it).
  bool body_complete = true;
  // proxy_request_buffering off: the body is not kept but handed to the
  // proxy piece by piece as it arrives (ContentSink::takeRequestBody).
  bool body_streamed = false;
  // What Lua changed (ngx.req.*, ngx.exec; the body is Request's). The
  // head stays as received (ngx.req.raw_header, $request); these win over
  // it where they are set.
  std::string method_override;  // ngx.req.set_method; empty: the head's
  bool internal = false;        // after ngx.exec or ngx.req.set_uri (ngx.req.is_internal)
  int uri_changes_left = kMaxUriChanges;
  UpstreamRecord upstream;
  // The response went out whole ($request_completion): false when it was
  // cut (an upstream or a handler broke after the head) or never sent.
  bool completed = false;

 protected:
  std::vector<std::pair<std::string, std::string>> edited_headers_;
  bool headers_edited_ = false;
};

struct Request : RequestFields {
  RequestBody body;  // what ngx.req.read_body / set_body_* hold

  // $request_method and ngx.req.get_method.
  std::string_view method() const { return method_override.empty() ? head->method.in(base) : method_override; }
  // The first header of that name (case-insensitive), as Lua left them.
  std::string_view header(std::string_view lower_name) const;
  // Calls fn(name, value) for each request header, as Lua left them
  // (ngx.req.get_headers, $http_*). Returns early when fn returns false.
  template <typename Fn>
  void forEachHeader(Fn fn) const {
    if (headers_edited_) {
      for (const auto& [name, value] : edited_headers_) {
        if (!fn(std::string_view(name), std::string_view(value))) return;
      }
      return;
    }
    for (const auto& h : head->headers) {
      if (!fn(h.name.in(base), h.value.in(base))) return;
    }
  }
  // ngx.req.set_header / clear_header: the first change copies the head's
  // headers (views into the connection buffer) into an owned list.
  void removeHeader(std::string_view name);
  void addHeader(std::string_view name, std::string_view value);
  // $args: the query as received, or as `set $args` / ngx.var.args replaced it.
  std::string_view query() const { return vars.argsReplaced() ? std::string_view(vars.args()) : args.in(base); }
  // Back to a fresh request; strings keep their capacity (no allocation per request).
  void reset() {
    body_complete = true;
    body_streamed = false;
    base = nullptr;
    head = nullptr;
    server = nullptr;
    location = nullptr;
    uri.clear();
    args = Slice{};
    has_args = false;
    host.clear();
    status = 0;
    bytes_sent = body_bytes_sent = request_length = 0;
    start_ms = 0;
    sent_content_type = {};
    sent_location.clear();
    sent_content_length = -1;
    vars.clear();
    body.reset();
    method_override.clear();
    internal = false;
    uri_changes_left = kMaxUriChanges;
    upstream.clear();
    completed = false;
    edited_headers_.clear();
    headers_edited_ = false;
  }
  // The settings that apply: the location's, else the server's.
  const conf::HttpSettings& settings() const {
    return location ? location->settings : server->settings;
  }

 private:
  void editHeaders();
};

// A copy of a request that outlives its connection (log_by_lua* still
// waiting after the connection moved on): the head's bytes and the
// connection's facts are copied with it, and a body read into memory.
class DetachedRequest {
 public:
  explicit DetachedRequest(const Request& r);
  DetachedRequest(const DetachedRequest&) = delete;
  DetachedRequest& operator=(const DetachedRequest&) = delete;
  Request& req() { return req_; }

 private:
  std::string bytes_;
  RequestHead head_;
  ConnInfo conn_;
  Request req_;
};

}  // namespace tidegate::http
