// The parts of Connection that serve Lua's view of the request: the body
// kept for ngx.req.* (http/request_body.h) or streamed to the proxy
// (proxy_request_buffering off), and internal redirects
// (ngx.exec, ngx.req.set_uri with jump) that carry the request on in
// another location.
#include "core/log.h"
#include "http/connection.h"
#include "http/http_server.h"
#include "http/router.h"
#include "http/status.h"

namespace tidegate::http {

using core::LogLevel;

namespace {
// A streamed request body waiting for the upstream beyond this pauses the
// client.
constexpr size_t kMaxStreamedBody = 64 * 1024;
}  // namespace

// Called once the location is known. The body is kept only for a location
// whose Lua may read it (any Lua phase, or lua_need_request_body, which
// also serves $request_body); elsewhere it is dropped as it is parsed.
void Connection::prepareBody() {
  const conf::HttpSettings& s = settings();
  bool lua_location = s.rewrite_lua || s.access_lua || s.log_lua || *s.lua_need_request_body ||
                      (req_.location && !req_.location->content_lua.empty());
  bool proxied = proxyLocation() && *s.proxy.pass_request_body && !streamsBody();
  bool admin = req_.location && req_.location->admin;
  if (!proxied && !admin && (!server_->contentHandler() || !lua_location)) return;
  req_.body.start(*s.client_body_buffer_size, &*s.client_body_temp_path);
}

bool Connection::takeRequestBody(std::string* out) {
  out->swap(body_stream_);
  body_stream_.clear();
  if (!out->empty()) {
    last_io_ms_ = uv_now(server_->loop());  // the body moves: the client is not idle
    if (phase_ == Phase::kBody) resumeReading();
  }
  return req_.body_complete;
}

// proxy_request_buffering off, for a location without Lua request phases
// (they may read the body) and a body the upstream can be sent as it comes
// (a chunked one needs HTTP/1.1 upstream, as in nginx).
bool Connection::streamsBody() const {
  const conf::HttpSettings& s = settings();
  if (!proxyLocation() || *s.proxy.request_buffering || !*s.proxy.pass_request_body) return false;
  if (s.rewrite_lua || s.access_lua || *s.lua_need_request_body) return false;
  return !parser_.head().chunked || !s.proxy.http_version || *s.proxy.http_version != 10;
}

void Connection::onBodyData(std::string_view data) {
  if (req_.body_streamed) {
    body_stream_.append(data);
    // Back-pressure: the client waits while the upstream has not taken this.
    if (body_stream_.size() >= kMaxStreamedBody) pauseReading();
    if (task_) task_->bodyAvailable();
    return;
  }
  if (!req_.body.keeping()) return;
  req_.body.append(data);  // a failure is answered once the body is complete
  if (req_.body.takeSpilled()) {
    // nginx's warning, which users grep for to size client_body_buffer_size.
    TG_LOG_CONN(LogLevel::kWarn, info_.id, "a client request body is buffered to a temporary file %s%s",
                req_.body.path().c_str(), describe().c_str());
  }
}

// The whole body is in. False if keeping it failed (disk full, no temp
// directory): the request was answered with 500, as nginx does.
bool Connection::completeBody() {
  if (!sealBody()) {
    failBody();
    return false;
  }
  if (*settings().lua_need_request_body) req_.body.markRead();
  return true;
}

void Connection::failBody() {
  TG_LOG_CONN(LogLevel::kCrit, info_.id, "%s while reading client request body%s", req_.body.error().c_str(),
              describe().c_str());
  req_.body.reset();
  respond(500, "text/html", errorPage(500), {});
  finishRequest();
}

// Closes the body (its file written out). False if keeping it failed.
bool Connection::sealBody() {
  if (req_.body.keeping()) req_.body.flush();
  req_.body.seal();
  return !req_.body.failed();
}

// A handler asked to continue elsewhere (result.redirect). Called from
// finish(), so possibly from inside the task that asked: that task is
// retired (freed on a later loop turn), never destroyed here. The body,
// the variables and the header changes stay with the request; ngx.ctx is
// the new task's, as OpenResty starts a fresh one.
void Connection::redirectInternally(ContentResult& result) {
  if (task_) server_->retire(std::move(task_));
  log_task_ = nullptr;
  bool jump = result.redirect == ContentResult::Redirect::kJump;
  if (--req_.uri_changes_left < 0) {
    const std::string& uri = jump ? req_.uri : result.redirect_uri;
    TG_LOG_CONN(LogLevel::kError, info_.id, "rewrite or internal redirection cycle while %s \"%s\"%s",
                jump ? "processing" : "internally redirecting to", uri.c_str(), describe().c_str());
    respond(500, "text/html", errorPage(500), {});
    finishRequest();
  } else {
    if (!jump) {
      req_.uri = std::move(result.redirect_uri);
      req_.vars.replaceArgs(result.redirect_args);
    }
    req_.internal = true;
    req_.location = findLocation(*req_.server, req_.uri);
    conn_settings_ = &req_.settings();
    // ngx.exec re-enters at the server's rewrite list, a jump at the new
    // location's (nginx's internal redirect vs. `rewrite ... last`).
    runPhases(!jump);
  }
  // From the loop (the handler had waited): the request may be answered
  // now, so go on with pipelined input as finish() does.
  if (!in_process_ && phase_ != Phase::kProcessing && !closing_) {
    processInput();
    resumeReading();
  }
}

}  // namespace tidegate::http
