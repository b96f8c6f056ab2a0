// The response side of Connection: the head and body of an answer, the
// streaming a handler asks for (flushOutput), and the header/body filters
// every response of a location passes through. Reading, the request life
// and timers are in connection.cc.
#include <charconv>
#include <cstring>
#include <string>

#include "core/clock.h"
#include "core/log.h"
#include "http/ascii.h"
#include "http/connection.h"
#include "http/http_server.h"
#include "http/status.h"
#include "tidegate/version.h"

namespace tidegate::http {

// nginx's absolute_redirect: a Location that is a local URI becomes
// absolute, with the host the client asked for (else the server name, else
// the local address) and our port when it is not the default.
std::string Connection::absoluteRedirect(std::string_view uri) const {
  if (uri.empty() || uri[0] != '/') return std::string(uri);
  bool tls = info_.ssl_protocol != nullptr;
  std::string abs = tls ? "https://" : "http://";
  const std::string& name = !req_.host.empty() ? req_.host : req_.server->primaryName();
  abs.append(!name.empty() ? name : info_.local_addr);
  if (info_.local_port != (tls ? 443 : 80)) abs.append(":").append(std::to_string(info_.local_port));
  return abs.append(uri);
}

namespace {

// A handler's headers as the response carries them: Content-Type,
// Location and Content-Length are taken out; framing headers stay ours.
// The views point into the list split (or the default type).
struct HandlerHeaders {
  std::string_view content_type;
  std::string_view location;
  int64_t content_length = -1;
};

// The other fields go to `extra` (cleared first), as views into `headers`.
template <class List>
HandlerHeaders splitHandlerHeaders(const List& headers, std::string_view default_type, HeaderViews* extra) {
  HandlerHeaders h;
  h.content_type = default_type;
  extra->clear();
  for (const auto& [name, value] : headers) {
    switch (name.size()) {
      case 12:
        if (iequals(name, "content-type")) {
          h.content_type = value;
          continue;
        }
        break;
      case 8:
        if (iequals(name, "location")) {
          h.location = value;
          continue;
        }
        break;
      case 14:
        if (iequals(name, "content-length")) {
          int64_t n = 0;
          auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
          if (ec == std::errc() && end == value.data() + value.size() && n >= 0) h.content_length = n;
          continue;
        }
        break;
      case 10:
      case 17:
        if (iequals(name, "connection") || iequals(name, "transfer-encoding")) continue;
        break;
      default:
        break;
    }
    // A handler's Server or Date (ngx.header.Server, proxy_pass_header)
    // replaces ours, as in nginx.
    extra->emplace_back(name, value);
  }
  return h;
}

HandlerHeaders splitResultHeaders(const ContentResult& r, std::string_view default_type, HeaderViews* extra) {
  return r.header_views ? splitHandlerHeaders(*r.header_views, default_type, extra)
                        : splitHandlerHeaders(r.headers, default_type, extra);
}

// A result's headers as a list of its own (the header filter may change it).
HeaderList ownedHeaders(ContentResult& r, bool take) {
  if (!r.header_views) return take ? std::move(r.headers) : r.headers;
  HeaderList out;
  out.reserve(r.header_views->size());
  for (const auto& [name, value] : *r.header_views) out.emplace_back(name, value);
  return out;
}

}  // namespace

// The content handler is done (possibly from a timer, long after onMessage).
void Connection::finish(ContentResult result, ContentTask* task) {
  if (closing_) return;
  finishes_++;
  if (result.redirect != ContentResult::Redirect::kNone) {
    redirectInternally(result);  // the body, if still arriving, keeps arriving for the next handler
    return;
  }
  if (result.declined && proxyLocation() && !proxying_) {
    // rewrite/access_by_lua* are done and the location proxies: the Lua
    // task stays (ngx.ctx for the filters and the log phase).
    if (task_ && task_.get() == task) {
      lua_task_ = std::move(task_);
      startProxy();
    } else {
      proxy_pending_ = true;  // startLua() starts it once start() returns
    }
    return;
  }
  lua_early_ = false;  // a handler that ends before the body: the connection closes after the answer
  log_task_ = task;
  bool async = task_ != nullptr;
  if (headers_sent_) {
    // The handler streamed: end the body, or cut the connection if it failed.
    if (result.aborted) abortResponse();
    else sendBody(result.body, true, task);
  } else if (result.aborted) {
    // The client is gone (499): nothing is sent; the access log says 499.
    req_.status = result.status;
    abortResponse();
  } else if (result.declined) {
    respond(404, "text/html", errorPage(404), {});
  } else if (result.status >= 300 && result.body.empty()) {
    HandlerHeaders h = splitResultHeaders(result, *settings().default_type, &server_->headViews());
    respond(result.status, "text/html", errorPage(result.status), absoluteRedirect(h.location), &server_->headViews());
  } else if (hasFilters()) {
    sendHead(result.status, ownedHeaders(result, true), static_cast<int64_t>(result.body.size()), task);
    sendBody(result.body, true, task);
  } else {
    HandlerHeaders h = splitResultHeaders(result, *settings().default_type, &server_->headViews());
    // The whole body is here: its size is the length (a handler's
    // Content-Length counts only for HEAD, where no body follows).
    int64_t length = static_cast<int64_t>(result.body.size());
    if (parser_.head().is_head && h.content_length >= 0) length = h.content_length;
    writeHead(result.status, h.content_type, absoluteRedirect(h.location), &server_->headViews(), length);
    writeBodyPart(result.body);
    endBody();
  }
  finishRequest();
  if (async && !log_deferred_) {
    // This call comes from inside the task: it is freed on a later loop turn.
    server_->retire(std::move(task_));
    processInput();  // the next pipelined requests, already buffered
    resumeReading();
  }
}

// No (more) output: the connection closes once what is queued is out.
void Connection::abortResponse() {
  keepalive_ = false;
  reset_after_write_ = true;
  body_ended_ = true;
}

bool Connection::hasFilters() const {
  const conf::HttpSettings& s = settings();
  return (s.header_filter_lua || s.body_filter_lua) && server_->contentHandler();
}

ContentTask* Connection::filterTask(ContentTask* task) {
  if (task) return task;
  if (lua_task_) return lua_task_.get();
  if (task_ && !proxying_) return task_.get();
  if (log_task_) return log_task_;
  if (!aux_task_) aux_task_ = server_->contentHandler()->detached(req_, *this);
  return aux_task_.get();
}

void Connection::sendHead(int status, HeaderList headers, int64_t content_length, ContentTask* task) {
  const conf::HttpSettings& s = settings();
  if (s.header_filter_lua &&
      !server_->contentHandler()->runHeaderFilter(req_, *s.header_filter_lua, filterTask(task), &status, &headers)) {
    req_.status = 500;
    abortResponse();
    return;
  }
  HandlerHeaders h = splitHandlerHeaders(headers, *s.default_type, &server_->headViews());
  // A body filter may change the length: the body goes out chunked.
  if (h.content_length >= 0) content_length = h.content_length;
  if (s.body_filter_lua) content_length = -1;
  writeHead(status, h.content_type, absoluteRedirect(h.location), &server_->headViews(), content_length);
}

void Connection::sendBody(std::string_view data, bool last, ContentTask* task) {
  const conf::HttpSettings& s = settings();
  if (s.body_filter_lua && headers_sent_ && body_allowed_ && !body_ended_ && server_->contentHandler()) {
    std::string chunk(data);
    bool eof = last;
    if (!server_->contentHandler()->runBodyFilter(req_, *s.body_filter_lua, filterTask(task), &chunk, &eof)) {
      abortResponse();
      return;
    }
    writeBodyPart(chunk);
    if (eof) endBody();
    return;
  }
  writeBodyPart(data);
  if (last) endBody();
}

void Connection::writeHandlerHead(ContentResult& result, int64_t content_length) {
  // Views: the head is written before this returns, and the handler's
  // headers stay as they are (it may read ngx.header afterwards).
  HandlerHeaders h = splitResultHeaders(result, *settings().default_type, &server_->headViews());
  writeHead(result.status, h.content_type, absoluteRedirect(h.location), &server_->headViews(),
            h.content_length >= 0 ? h.content_length : content_length);
}

// ngx.flush / ngx.eof: the head once, then what the handler printed so far.
void Connection::flushOutput(ContentResult& result, bool last, ContentTask* task) {
  if (closing_) return;
  int64_t length = last ? static_cast<int64_t>(result.body.size()) : -1;
  if (!headers_sent_ && hasFilters()) sendHead(result.status, ownedHeaders(result, false), length, task);
  else if (!headers_sent_) writeHandlerHead(result, length);
  sendBody(result.body, last, task);
  result.body.clear();
  if (output_held_) return;
  flush();
  updateTimer();
}

void Connection::holdOutput(bool hold) {
  output_held_ = hold;
  if (hold || closing_) return;
  flush();
  updateTimer();
}

void Connection::streamBody(std::string_view data, bool last, ContentTask* task) {
  if (closing_) return;
  sendBody(data, last, task);
  if (output_held_) return;
  flush();
  updateTimer();
}

size_t Connection::pendingOutput() const { return out_.size() + tcp_.write_queue_size; }

void Connection::startTunnel(const HeaderList& headers, TunnelPeer* peer) {
  if (closing_) return;
  headers_sent_ = true;
  body_allowed_ = false;
  body_ended_ = true;
  keepalive_ = false;  // the connection ends with the tunnel
  req_.status = 101;
  size_t before = out_.size();
  out_.append(*settings().server_tokens ? "HTTP/1.1 101 Switching Protocols\r\nServer: tidegate/" TIDEGATE_VERSION
                                        : "HTTP/1.1 101 Switching Protocols\r\nServer: tidegate");
  out_.append("\r\nDate: ");
  out_.append(core::httpDate());
  for (const auto& [name, value] : headers) out_.append("\r\n").append(name).append(": ").append(value);
  out_.append("\r\nConnection: upgrade\r\n\r\n");
  req_.bytes_sent += out_.size() - before;
  enterTunnel(peer);
}

void Connection::takeOver(TunnelPeer* peer) {
  if (closing_) return;
  headers_sent_ = true;
  body_allowed_ = false;
  body_ended_ = true;
  keepalive_ = false;
  lua_early_ = false;
  enterTunnel(peer);
}

void Connection::enterTunnel(TunnelPeer* peer) {
  phase_ = Phase::kTunnel;
  tunnel_ = peer;
  flush();
  if (closing_) return;
  // What the client sent right behind its request belongs to the tunnel.
  size_t early = end_ - parsed_;
  const char* at = buf_ + parsed_;
  end_ = parsed_;
  if (early > 0) peer->onClientData(at, early);
  if (closing_ || tunnel_paused_) return;
  pauseTunnel(false);
}

void Connection::tunnelWrite(std::string_view data) {
  if (closing_) return;
  out_.append(data);
  req_.bytes_sent += data.size();
  req_.body_bytes_sent += data.size();
  flush();
  updateTimer();
}

void Connection::pauseTunnel(bool paused) {
  tunnel_paused_ = paused;
  if (closing_) return;
  if (paused) {
    pauseReading();
  } else if (!reading_) {
    startReads();
  }
}

// Client bytes land at end_ and go to the peer at once; end_ stays (the
// head before it is kept for the log).
void Connection::handleTunnelRead(ssize_t nread) {
  if (nread == UV_ENOBUFS || nread == 0) return;
  if (nread < 0) {
    pauseReading();
    if (tunnel_) tunnel_->onClientEnd();
    return;
  }
  last_io_ms_ = uv_now(server_->loop());
  if (tunnel_) tunnel_->onClientData(buf_ + end_, static_cast<size_t>(nread));
}

bool Connection::waitDrain(std::function<void()> cb) {
  if (!write_pending_ && out_.empty()) return true;
  drain_cb_ = std::move(cb);
  return false;
}

// --- responding -----------------------------------------------------------------

bool Connection::shouldKeepAlive(int status) const {
  const RequestHead& h = parser_.head();
  if (server_->draining() || !h.keep_alive) return false;
  if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 || status == 501 ||
      status == 505) {
    return false;
  }
  if (*settings().keepalive_timeout_ms == 0) return false;  // nginx: keepalive_timeout 0 disables keepalive
  return info_.requests < *settings().keepalive_requests;
}

void Connection::respond(int status, std::string_view content_type, std::string_view body, std::string_view location,
                         const HeaderViews* extra_headers) {
  if (hasFilters()) {
    HeaderList headers;
    headers.emplace_back("Content-Type", content_type);
    if (!location.empty()) headers.emplace_back("Location", location);
    if (extra_headers) {
      for (const auto& [name, value] : *extra_headers) headers.emplace_back(name, value);
    }
    sendHead(status, std::move(headers), static_cast<int64_t>(body.size()), nullptr);
    sendBody(body, true, nullptr);
    return;
  }
  writeHead(status, content_type, location, extra_headers, static_cast<int64_t>(body.size()));
  writeBodyPart(body);
  body_ended_ = true;
}

namespace {

// Writes a head into room made beforehand (writeHead sizes it): literals
// become fixed-size copies, the rest one memcpy each.
struct HeadWriter {
  char* p;
  template <size_t N>
  void put(const char (&lit)[N]) {
    memcpy(p, lit, N - 1);
    p += N - 1;
  }
  void put(std::string_view s) {
    if (s.empty()) return;  // its data() may be null (reasonPhrase of an unlisted code), not for memcpy
    memcpy(p, s.data(), s.size());
    p += s.size();
  }
  void number(int64_t v) { p = std::to_chars(p, p + 20, v).ptr; }
};

}  // namespace

size_t Connection::writeHead(int status, std::string_view content_type, std::string_view location,
                             const HeaderViews* extra_headers, int64_t content_length) {
  const RequestHead& h = parser_.head();
  keepalive_ = keepalive_ && shouldKeepAlive(status) && status != 101;  // 101: the connection is never reused
  // The body must be fully read to keep the connection: a reply that came
  // before the body (an early error) closes it.
  if (!parser_.messageDone() && h.hasBody()) keepalive_ = false;
  bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
  body_allowed_ = !no_body && !h.is_head;
  chunked_ = false;
  if (!no_body && content_length < 0) {
    // The length is not known yet: chunked to HTTP/1.1 clients; HTTP/1.0
    // ones read until the connection closes.
    if (h.http_minor >= 1) chunked_ = body_allowed_;
    else keepalive_ = false;
  }
  headers_sent_ = true;
  body_ended_ = false;
  req_.status = status;
  bool own_server = true, own_date = true;
  // Room for the fixed parts and the variable ones: the head is written with
  // one size check, not one per piece (this runs for every response). The
  // fixed parts below take at most about 220 bytes: the literals, the status
  // code, a date (under 40) and two numbers (20 each at most).
  std::string_view reason = reasonPhrase(status);
  size_t room = 256 + reason.size() + content_type.size() + location.size();
  if (extra_headers) {
    for (const auto& [name, value] : *extra_headers) {
      if (name.size() == 6 && iequals(name, "server")) own_server = false;
      if (name.size() == 4 && iequals(name, "date")) own_date = false;
      room += name.size() + value.size() + 4;
    }
  }
  size_t before = out_.size();
  out_.resize(before + room);
  HeadWriter w{out_.data() + before};
  w.put("HTTP/1.1 ");  // RFC 9110 6.2: our version, whatever the client's
  char code[4] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
                  static_cast<char>('0' + status % 10), ' '};
  w.put(std::string_view(code, 4));
  w.put(reason);
  // server_tokens: nginx's rule, our name.
  if (own_server) {
    if (*settings().server_tokens) w.put("\r\nServer: tidegate/" TIDEGATE_VERSION);
    else w.put("\r\nServer: tidegate");
  }
  if (own_date) {
    w.put("\r\nDate: ");
    w.put(core::httpDate());
  }
  if (!no_body) {
    w.put("\r\nContent-Type: ");
    w.put(content_type);
    if (content_length >= 0) {
      w.put("\r\nContent-Length: ");
      w.number(content_length);
      req_.sent_content_length = content_length;
    } else if (h.http_minor >= 1) {
      w.put("\r\nTransfer-Encoding: chunked");
    }
  }
  req_.sent_content_type = content_type;
  if (!location.empty()) {
    w.put("\r\nLocation: ");
    w.put(location);
    req_.sent_location.assign(location);
  }
  if (extra_headers) {
    for (const auto& [name, value] : *extra_headers) {
      w.put("\r\n");
      w.put(name);
      w.put(": ");
      w.put(value);
    }
  }
  if (keepalive_ && *settings().keepalive_header_s) {
    w.put("\r\nKeep-Alive: timeout=");
    w.number(*settings().keepalive_header_s);
  }
  // A handler's protocol switch (ngx.req.socket(true) follows) says so,
  // as nginx's header filter does.
  if (status == 101) w.put("\r\nConnection: upgrade\r\n\r\n");
  else if (keepalive_) w.put("\r\nConnection: keep-alive\r\n\r\n");
  else w.put("\r\nConnection: close\r\n\r\n");
  out_.resize(static_cast<size_t>(w.p - out_.data()));
  size_t head_bytes = out_.size() - before;
  req_.bytes_sent += head_bytes;
  return head_bytes;
}

void Connection::writeBodyPart(std::string_view data) {
  if (!headers_sent_ || !body_allowed_ || body_ended_ || data.empty()) return;
  size_t before = out_.size();
  if (chunked_) {
    char num[20];
    auto [end, ec] = std::to_chars(num, num + sizeof(num), data.size(), 16);
    out_.append(num, static_cast<size_t>(end - num));
    out_.append("\r\n");
    out_.append(data);
    out_.append("\r\n");
  } else {
    out_.append(data);
  }
  req_.body_bytes_sent += data.size();
  req_.bytes_sent += out_.size() - before;
}

void Connection::endBody() {
  if (!headers_sent_ || body_ended_) return;
  body_ended_ = true;
  if (chunked_ && body_allowed_) {
    out_.append("0\r\n\r\n");
    req_.bytes_sent += 5;
  }
}

}  // namespace tidegate::http
