// ngx.req body functions: read_body, discard_body, get_body_data,
// get_body_file, get_post_args, set_body_data, set_body_file, init_body,
// append_body, finish_body. Arguments, results, phases and error texts
// follow lua-nginx-module.
//
// As in OpenResty, the Lua phases start once the head is read; the body
// keeps arriving (http/request_body.h keeps it) and ngx.req.read_body waits
// for the rest. It marks the body as read, which get_body_data and friends
// require.
#include <algorithm>
#include <string>

#include "core/log.h"
#include "http/request.h"
#include "http/variables.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

// read_body, discard_body, get_body_file, set_body_*, init/append/finish_body.
RequestContext* requireBodyPhase(lua_State* L) {
  return requireRequestIn(L, {Phase::kRewrite, Phase::kAccess, Phase::kContent});
}

void checkArgCount(lua_State* L, int min, int max, const char* expecting) {
  int n = lua_gettop(L);
  if (n < min || n > max) luaL_error(L, "expecting %s but seen %d", expecting, n);
}

// set_body_data, set_body_file, init_body need a body that was read and
// not discarded.
http::RequestBody& readBody(lua_State* L, RequestContext* ctx) {
  http::RequestBody& body = ctx->mutableReq().body;
  if (body.discarded()) luaL_error(L, "request body already discarded asynchronously");
  if (!body.read()) luaL_error(L, "request body not read yet");
  return body;
}

// A new body also changes the Content-Length the request shows, as in
// OpenResty (get_headers, $content_length, $http_content_length).
void setContentLength(RequestContext* ctx, uint64_t size) {
  http::Request& r = ctx->mutableReq();
  r.removeHeader("Content-Length");
  r.addHeader("Content-Length", std::to_string(size));
}

// A temp file failed: [crit] in nginx's shape, then OpenResty's error.
int fileError(lua_State* L, RequestContext* ctx) {
  TG_LOG_CONN(core::LogLevel::kCrit, ctx->req().conn ? ctx->req().conn->id : 0, "%s%s",
              ctx->req().body.error().c_str(), http::describeRequest(ctx->req()).c_str());
  return luaL_error(L, "fail to write file");
}

// Waits in ngx.req.read_body for the rest of the body.
class BodyWait : public Wait {
 public:
  BodyWait(RequestContext* ctx, Co* co) : ctx_(ctx), co_(co) { ctx->bodyWaiters().push_back(co); }
  ~BodyWait() override {
    auto& w = ctx_->bodyWaiters();
    w.erase(std::remove(w.begin(), w.end(), co_), w.end());
  }

 private:
  RequestContext* ctx_;
  Co* co_;
};

// ngx.req.read_body(): returns once the whole body is in (at once when it
// already is); the body then counts as read.
int readBodyFn(lua_State* L) {
  checkArgCount(L, 0, 0, "0 arguments");
  RequestContext* ctx = requireBodyPhase(L);
  // Read already, or taken by ngx.req.socket(): nothing to wait for.
  if (ctx->req().body.read()) return 0;
  if (ctx->req().body_complete) {
    ctx->mutableReq().body.markRead();
    return 0;
  }
  LuaTask* task = requireYieldable(L);
  task->suspend(std::make_unique<BodyWait>(ctx, task->running()));
  return lua_yield(L, 0);
}

// The body is dropped (and its temp file deleted); get_body_data returns
// nil and get_post_args an empty table from now on.
int discardBody(lua_State* L) {
  checkArgCount(L, 0, 0, "0 arguments");
  RequestContext* ctx = requireBodyPhase(L);
  ctx->mutableReq().body.discard();
  return 0;
}

// get_body_data(max_bytes?): the body in memory; nil if not read yet, in
// a file, or empty.
int getBodyData(lua_State* L) {
  checkArgCount(L, 0, 1, "0 or 1 arguments");
  RequestContext* ctx = requireRequestIn(L, {Phase::kRewrite, Phase::kAccess, Phase::kContent, Phase::kLog});
  lua_Integer max = luaL_optinteger(L, 1, 0);
  if (max < 0) return luaL_error(L, "bad max_bytes argument: %d", static_cast<int>(max));
  const http::RequestBody& body = ctx->req().body;
  if (!body.read() || body.discarded() || body.inFile() || body.data().empty()) {
    lua_pushnil(L);
    return 1;
  }
  size_t len = body.data().size();
  if (max > 0 && static_cast<size_t>(max) < len) len = static_cast<size_t>(max);
  lua_pushlstring(L, body.data().data(), len);
  return 1;
}

// get_body_file(): the temp file's name, or nil (not read, or in memory).
// The file is the request's: it is deleted when the request ends.
int getBodyFile(lua_State* L) {
  checkArgCount(L, 0, 0, "0 arguments");
  RequestContext* ctx = requireBodyPhase(L);
  const http::RequestBody& body = ctx->req().body;
  if (!body.read() || !body.inFile()) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, body.path().data(), body.path().size());
  return 1;
}

// get_post_args(max_args?): the application/x-www-form-urlencoded body as
// a table shaped like get_uri_args'; max_args defaults to 100 (0: none).
int getPostArgs(lua_State* L) {
  checkArgCount(L, 0, 1, "0 or 1 arguments");
  RequestContext* ctx = requireRequestIn(L, {Phase::kRewrite, Phase::kAccess, Phase::kContent, Phase::kLog});
  lua_Integer max = luaL_optinteger(L, 1, 100);
  const http::RequestBody& body = ctx->req().body;
  if (body.discarded()) {
    lua_createtable(L, 0, 0);
    return 1;
  }
  if (!body.read()) return luaL_error(L, "no request body found; maybe you should turn on lua_need_request_body?");
  if (body.inFile()) {
    lua_pushnil(L);
    lua_pushliteral(L, "request body in temp file not supported");
    return 2;
  }
  return pushArgs(L, body.data(), max);
}

// set_body_data(data): the body becomes `data`, in memory (an empty
// string: no body).
int setBodyData(lua_State* L) {
  checkArgCount(L, 1, 1, "1 arguments");
  size_t len = 0;
  const char* data = luaL_checklstring(L, 1, &len);
  RequestContext* ctx = requireBodyPhase(L);
  readBody(L, ctx).setData(std::string_view(data, len));
  setContentLength(ctx, len);
  return 0;
}

// set_body_file(path, auto_clean?): the body becomes that file; with
// auto_clean it is deleted when the request ends.
int setBodyFile(lua_State* L) {
  checkArgCount(L, 1, 2, "1 or 2 arguments");
  size_t len = 0;
  const char* path = luaL_checklstring(L, 1, &len);
  bool clean = false;
  if (lua_gettop(L) == 2) {
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    clean = lua_toboolean(L, 2);
  }
  RequestContext* ctx = requireBodyPhase(L);
  http::RequestBody& body = readBody(L, ctx);
  std::string err;
  if (!body.setFile(std::string(path, len), clean, &err)) return luaL_error(L, "%s", err.c_str());
  setContentLength(ctx, body.size());
  return 0;
}

// init_body(buffer_size?): starts a new, empty body to build with
// append_body: in memory up to buffer_size (default client_body_buffer_size),
// then in a temp file.
int initBody(lua_State* L) {
  checkArgCount(L, 0, 1, "0 or 1 argument");
  RequestContext* ctx = requireBodyPhase(L);
  http::RequestBody& body = readBody(L, ctx);
  const conf::HttpSettings& s = ctx->req().settings();
  uint64_t size = *s.client_body_buffer_size;
  if (lua_gettop(L) == 1) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0) return luaL_error(L, "bad size argument: %d", static_cast<int>(n));
    size = static_cast<uint64_t>(n);
  }
  body.start(size, &*s.client_body_temp_path);
  body.markRead();
  return 0;
}

http::RequestBody& initializedBody(lua_State* L, RequestContext* ctx) {
  http::RequestBody& body = ctx->mutableReq().body;
  if (!body.keeping()) luaL_error(L, "request_body not initialized");
  return body;
}

int appendBody(lua_State* L) {
  checkArgCount(L, 1, 1, "1 arguments");
  size_t len = 0;
  const char* data = luaL_checklstring(L, 1, &len);
  RequestContext* ctx = requireBodyPhase(L);
  if (!initializedBody(L, ctx).append(std::string_view(data, len))) return fileError(L, ctx);
  return 0;
}

// finish_body(): the body built by init_body/append_body is complete;
// Content-Length shows its size.
int finishBody(lua_State* L) {
  checkArgCount(L, 0, 0, "0 argument");
  RequestContext* ctx = requireBodyPhase(L);
  http::RequestBody& body = initializedBody(L, ctx);
  if (!body.flush()) return fileError(L, ctx);
  body.seal();
  setContentLength(ctx, body.size());
  return 0;
}

}  // namespace

// Stack: [req] -> [req] with the body functions set.
void openNgxReqBody(lua_State* L) {
  static const luaL_Reg kFns[] = {
      {"read_body", readBodyFn},     {"discard_body", discardBody},   {"get_body_data", getBodyData},
      {"get_body_file", getBodyFile}, {"get_post_args", getPostArgs}, {"set_body_data", setBodyData},
      {"set_body_file", setBodyFile}, {"init_body", initBody},         {"append_body", appendBody},
      {"finish_body", finishBody},   {nullptr, nullptr},
  };
  for (const luaL_Reg* f = kFns; f->name; f++) setFn(L, f->name, f->func);
}

}  // namespace tidegate::lua
