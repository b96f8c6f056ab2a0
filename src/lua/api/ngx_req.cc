// ngx.req.* without the body (api/ngx_req_body.cc): the read side
// (get_method, http_version, get_uri_args, get_headers, raw_header,
// start_time, is_internal), the changes (set_header, clear_header,
// set_method, set_uri_args, set_uri) and ngx.exec. Arguments, return
// shapes, phases and error texts follow lua-nginx-module.
#include <string>

#include "core/log.h"
#include "http/ascii.h"
#include "http/uri.h"
#include "http/variables.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/vm.h"

namespace tidegate::lua {

void openNgxReqBody(lua_State* L);  // api/ngx_req_body.cc
void openNgxReqSocket(lua_State* L);  // api/ngx_req_socket.cc

RequestContext* requireRequestIn(lua_State* L, std::initializer_list<Phase> allowed) {
  RequestContext* ctx = requireRequest(L);
  Phase phase = Vm::from(L)->phase();
  for (Phase p : allowed) {
    if (p == phase) return ctx;
  }
  raiseDisabled(L, phase);
}

namespace {

// Stack: [t, key, value] -> [t]: t[key] = value, or an array of values when
// the key repeats (OpenResty's multi-value shape).
void addMulti(lua_State* L) {
  lua_pushvalue(L, -2);  // [t, k, v, k]
  lua_rawget(L, -4);     // [t, k, v, old]
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_rawset(L, -3);
    return;
  }
  if (lua_type(L, -1) == LUA_TTABLE) {  // [t, k, v, arr]
    lua_insert(L, -2);                  // [t, k, arr, v]
    lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
    lua_pop(L, 2);
    return;
  }
  lua_createtable(L, 2, 0);  // [t, k, v, old, arr]
  lua_insert(L, -2);         // [t, k, v, arr, old]
  lua_rawseti(L, -2, 1);     // [t, k, v, arr]
  lua_insert(L, -2);         // [t, k, arr, v]
  lua_rawseti(L, -2, 2);     // [t, k, arr]
  lua_rawset(L, -3);         // [t]
}

int getMethod(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  std::string_view m = ctx->req().method();
  lua_pushlstring(L, m.data(), m.size());
  return 1;
}

int httpVersion(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_pushnumber(L, ctx->req().head->http_minor == 0 ? 1.0 : 1.1);
  return 1;
}

int startTime(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_pushnumber(L, static_cast<double>(ctx->startWallMs()) / 1000.0);
  return 1;
}

// True after ngx.exec or ngx.req.set_uri, as nginx's r->internal.
int isInternal(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_pushboolean(L, ctx->req().internal);
  return 1;
}

// ngx.req.get_uri_args(max?): the query as a table; max defaults to 100.
int getUriArgs(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  return pushArgs(L, ctx->req().query(), luaL_optinteger(L, 1, 100));
}

// ngx.decode_args(str, max?): the same parsing for any string, any phase.
int decodeArgs(lua_State* L) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, 1, &len);
  return pushArgs(L, std::string_view(s, len), luaL_optinteger(L, 2, 100));
}

// The metatable OpenResty gives get_headers() results: h.user_agent and
// h["User-Agent"] find "user-agent".
int headersIndex(lua_State* L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  std::string key = lua_tostring(L, 2);
  for (char& c : key) c = c == '_' ? '-' : http::asciiLower(c);
  lua_pushlstring(L, key.data(), key.size());
  lua_rawget(L, 1);
  return 1;
}

// Pushes a header table as ngx.req.get_headers returns it, from the
// headers `each` visits (it calls its argument with name and value, and
// stops when that returns false): names lower-cased unless raw, repeated
// headers as arrays; more than `max` (0: no limit) returns "truncated" too.
template <typename Each>
int pushHeaderTable(lua_State* L, lua_Integer max, bool raw, int hint, Each each) {
  lua_createtable(L, 0, hint);
  int count = 0;
  bool truncated = false;
  std::string name;
  each([&](std::string_view n, std::string_view value) {
    if (max > 0 && count >= max) {
      truncated = true;
      return false;
    }
    count++;
    name.assign(n);
    if (!raw) {
      for (char& c : name) c = http::asciiLower(c);
    }
    lua_pushlstring(L, name.data(), name.size());
    lua_pushlstring(L, value.data(), value.size());
    addMulti(L);
    return true;
  });
  if (!raw) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, headersIndex);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
  }
  if (truncated) {
    lua_pushliteral(L, "truncated");
    return 2;
  }
  return 1;
}

// ngx.req.get_headers(max?, raw?): the headers as set_header / clear_header
// left them; default max 100.
int getHeaders(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_Integer max = luaL_optinteger(L, 1, 100);
  bool raw = lua_toboolean(L, 2);
  const http::Request& r = ctx->req();
  return pushHeaderTable(L, max, raw, static_cast<int>(r.head->headers.size()),
                         [&](const auto& visit) { r.forEachHeader(visit); });
}

// ngx.resp.get_headers(max?, raw?): the response headers set so far
// (ngx.header), in the same shape.
int respGetHeaders(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_Integer max = luaL_optinteger(L, 1, 100);
  bool raw = lua_toboolean(L, 2);
  const auto& headers = ctx->result().headers;
  return pushHeaderTable(L, max, raw, static_cast<int>(headers.size()), [&](const auto& visit) {
    for (const auto& [n, v] : headers) {
      if (!visit(n, v)) return;
    }
  });
}

// ngx.req.raw_header(no_request_line?): the head as received, whatever
// set_header changed since (as in OpenResty).
int rawHeader(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  const http::Request& r = ctx->req();
  std::string_view head(r.base, r.head->head_len);
  if (lua_toboolean(L, 1)) {
    size_t eol = head.find("\r\n");
    if (eol != std::string_view::npos) head.remove_prefix(eol + 2);
  }
  lua_pushlstring(L, head.data(), head.size());
  return 1;
}


// --- changing the request ---------------------------------------------------

// set_header, clear_header, set_method, set_uri_args, set_uri: the phases
// of their "Context:" lines that tidegate has, and balancer_by_lua*, whose
// changes reach the upstream through ngx.balancer.recreate_request().
RequestContext* requireMutablePhase(lua_State* L) {
  return requireRequestIn(L, {Phase::kSet, Phase::kRewrite, Phase::kAccess, Phase::kContent, Phase::kBalancer});
}

// A header name or value as OpenResty stores it: control bytes (CR, LF...)
// are escaped as %XX so that no header can be split in two.
std::string safeHeaderText(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// A header value argument: string, number or boolean (as tostring()).
std::string headerValue(lua_State* L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER: {
      size_t len = 0;
      const char* v = lua_tolstring(L, idx, &len);
      return safeHeaderText(std::string_view(v, len));
    }
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "true" : "false";
    default: break;
  }
  luaL_error(L, "attempt to set request header to a %s", luaL_typename(L, idx));
  return {};
}

// The name argument as tostring() would print it (nil too, as
// lua-resty-core does), with '_' as '-' (lua_transform_underscores_in_
// response_headers, on by default, applies to request headers as well).
std::string headerNameArg(lua_State* L) {
  std::string name = lua_isnil(L, 1) ? std::string("nil") : headerValue(L, 1);
  for (char& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

// ngx.req.set_header(name, value | {values} | nil): replaces every header
// of that name; ngx.req.get_headers, ngx.var.http_NAME and $http_NAME see
// the change, ngx.req.raw_header does not.
int reqSetHeader(lua_State* L) {
  RequestContext* ctx = requireMutablePhase(L);
  if (lua_gettop(L) != 2) return luaL_error(L, "expecting two arguments, but seen %d", lua_gettop(L));
  std::string name = headerNameArg(L);
  http::Request& r = ctx->mutableReq();
  if (lua_type(L, 2) != LUA_TTABLE) {
    if (lua_isnil(L, 2)) {
      r.removeHeader(name);
      return 0;
    }
    std::string value = headerValue(L, 2);
    r.removeHeader(name);
    r.addHeader(name, value);
    return 0;
  }
  r.removeHeader(name);
  size_t n = lua_objlen(L, 2);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, static_cast<int>(i));
    r.addHeader(name, headerValue(L, -1));
    lua_pop(L, 1);
  }
  return 0;
}

// ngx.req.clear_header(name).
int reqClearHeader(lua_State* L) {
  RequestContext* ctx = requireMutablePhase(L);
  if (lua_gettop(L) != 1) return luaL_error(L, "expecting one argument, but seen %d", lua_gettop(L));
  ctx->mutableReq().removeHeader(headerNameArg(L));
  return 0;
}

// ngx.HTTP_GET... as nginx's method bits.
const char* methodName(lua_Integer m) {
  switch (m) {
    case 0x0002: return "GET";
    case 0x0004: return "HEAD";
    case 0x0008: return "POST";
    case 0x0010: return "PUT";
    case 0x0020: return "DELETE";
    case 0x0040: return "MKCOL";
    case 0x0080: return "COPY";
    case 0x0100: return "MOVE";
    case 0x0200: return "OPTIONS";
    case 0x0400: return "PROPFIND";
    case 0x0800: return "PROPPATCH";
    case 0x1000: return "LOCK";
    case 0x2000: return "UNLOCK";
    case 0x4000: return "PATCH";
    case 0x8000: return "TRACE";
    default: return nullptr;
  }
}

// ngx.req.set_method(ngx.HTTP_POST): $request_method and get_method follow.
int reqSetMethod(lua_State* L) {
  RequestContext* ctx = requireMutablePhase(L);
  if (lua_type(L, 1) != LUA_TNUMBER) return luaL_error(L, "bad method number");
  lua_Integer m = lua_tointeger(L, 1);
  const char* name = methodName(m);
  if (!name) return luaL_error(L, "unsupported HTTP method: %d", static_cast<int>(m));
  ctx->mutableReq().method_override = name;
  return 0;
}

// A string, number or table (encoded as ngx.encode_args) query argument.
std::string argsArg(lua_State* L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
    case LUA_TSTRING: {
      size_t len = 0;
      const char* s = lua_tolstring(L, idx, &len);
      return std::string(s, len);
    }
    case LUA_TTABLE: return encodeArgs(L, idx);
    default: break;
  }
  lua_pushfstring(L, "string, number, or table expected, but got %s", luaL_typename(L, idx));
  luaL_argerror(L, idx, lua_tostring(L, -1));
  return {};
}

// ngx.req.set_uri_args(string | table): $args, $query_string and
// get_uri_args follow.
int reqSetUriArgs(lua_State* L) {
  RequestContext* ctx = requireMutablePhase(L);
  if (lua_gettop(L) != 1) return luaL_error(L, "expecting 1 argument but seen %d", lua_gettop(L));
  ctx->req().vars.replaceArgs(argsArg(L, 1));
  return 0;
}

// lua-nginx-module refuses control bytes and spaces in a URI it is given:
// the first such byte, or -1.
int unsafeUriByte(std::string_view uri) {
  for (unsigned char c : uri) {
    if (c <= 0x20 || c == 0x7f) return c;
  }
  return -1;
}

// Headers (or output, which would send them) are out: the request cannot
// go elsewhere any more.
bool responseStarted(RequestContext* ctx) { return ctx->headersSent() || !ctx->result().body.empty(); }

// ngx.req.set_uri(uri, jump?, binary?): $uri becomes `uri`. With jump
// (rewrite_by_lua* only), the location is searched again for it and the
// request goes on there (nginx's `rewrite ... last`); the call does not
// return.
int reqSetUri(lua_State* L) {
  int n = lua_gettop(L);
  if (n < 1 || n > 3) return luaL_error(L, "expecting 1 or 2 or 3 arguments but seen %d", n);
  RequestContext* ctx = requireMutablePhase(L);
  size_t len = 0;
  const char* p = luaL_checklstring(L, 1, &len);
  if (len == 0) return luaL_error(L, "attempt to use zero-length uri");
  std::string_view uri(p, len);
  bool binary = false;
  if (n >= 3) {
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    binary = lua_toboolean(L, 3);
  }
  if (int c = binary ? -1 : unsafeUriByte(uri); c >= 0) {
    return luaL_error(L, "unsafe byte \"0x%x\" in uri \"%s\"", static_cast<unsigned>(c), std::string(uri).c_str());
  }
  bool jump = false;
  if (n >= 2) {
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    jump = lua_toboolean(L, 2);
    if (jump && Vm::from(L)->phase() != Phase::kRewrite) raiseDisabled(L, Vm::from(L)->phase());
    if (jump) requireYieldable(L);
    if (jump && responseStarted(ctx)) return luaL_error(L, "attempt to call ngx.req.set_uri after sending out response headers");
  }
  http::Request& r = ctx->mutableReq();
  r.uri.assign(uri);
  r.internal = true;
  if (!jump) return 0;
  ctx->redirect(http::ContentResult::Redirect::kJump, {}, {});
  return lua_yield(L, 0);
}

// ngx.exec(uri, args?): an internal redirect. `uri` may carry "?args";
// `args` (string or table) are appended to those. The handler ends here;
// the request starts over in the location `uri` matches, with a new
// ngx.ctx. Named locations ("@name") are not supported yet: 500.
int ngxExec(lua_State* L) {
  int n = lua_gettop(L);
  if (n != 1 && n != 2) return luaL_error(L, "expecting one or two arguments, but got %d", n);
  RequestContext* ctx = requireRequestIn(L, {Phase::kRewrite, Phase::kAccess, Phase::kContent});
  size_t len = 0;
  const char* p = luaL_checklstring(L, 1, &len);
  if (len == 0) return luaL_error(L, "The uri argument is empty");
  std::string_view target(p, len);
  // OpenResty's order of checks: the uri, the args, then the response.
  bool named = target[0] == '@';
  size_t q = named ? std::string_view::npos : target.find('?');
  std::string path;
  if (!named && (unsafeUriByte(target) >= 0 || !http::normalizePath(target.substr(0, q), &path))) {
    return luaL_error(L, "unsafe uri");
  }
  std::string args(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  if (n == 2 && !lua_isnil(L, 2)) {
    std::string extra = argsArg(L, 2);
    if (!extra.empty()) args.append(args.empty() ? "" : "&").append(extra);
  }
  requireYieldable(L);
  if (responseStarted(ctx)) return luaL_error(L, "attempt to call ngx.exec after sending out response headers");
  if (named) {
    TG_LOG_CONN(core::LogLevel::kError, ctx->req().conn ? ctx->req().conn->id : 0,
                "ngx.exec to the named location \"%s\" failed: named locations are not supported%s",
                std::string(target).c_str(), http::describeRequest(ctx->req()).c_str());
    ctx->exit(500);
    return lua_yield(L, 0);
  }
  ctx->redirect(http::ContentResult::Redirect::kExec, std::move(path), std::move(args));
  return lua_yield(L, 0);
}

}  // namespace

int pushArgs(lua_State* L, std::string_view args, lua_Integer max) {
  lua_createtable(L, 0, 4);
  int count = 0;
  size_t pos = 0;
  while (pos < args.size()) {
    size_t amp = args.find('&', pos);
    if (amp == std::string_view::npos) amp = args.size();
    std::string_view pair = args.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) continue;
    if (max > 0 && count >= max) {
      lua_pushliteral(L, "truncated");
      return 2;
    }
    count++;
    size_t eq = pair.find('=');
    std::string key = http::unescapeComponent(pair.substr(0, eq));
    if (key.empty()) continue;  // "=x": OpenResty skips an empty key
    lua_pushlstring(L, key.data(), key.size());
    if (eq == std::string_view::npos) {
      lua_pushboolean(L, 1);
    } else {
      std::string value = http::unescapeComponent(pair.substr(eq + 1));
      lua_pushlstring(L, value.data(), value.size());
    }
    addMulti(L);
  }
  return 1;
}


// Stack: [ngx] -> [ngx] with ngx.req set.
void openNgxReq(lua_State* L) {
  lua_createtable(L, 0, 24);
  static const luaL_Reg kFns[] = {
      {"get_method", getMethod},   {"http_version", httpVersion}, {"start_time", startTime},
      {"is_internal", isInternal}, {"get_uri_args", getUriArgs},  {"get_headers", getHeaders},
      {"raw_header", rawHeader},   {"set_header", reqSetHeader}, {"clear_header", reqClearHeader},
      {"set_method", reqSetMethod}, {"set_uri_args", reqSetUriArgs}, {"set_uri", reqSetUri},
      {nullptr, nullptr},
  };
  for (const luaL_Reg* f = kFns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  openNgxReqBody(L);
  openNgxReqSocket(L);
  lua_setfield(L, -2, "req");
  lua_createtable(L, 0, 1);
  setFn(L, "get_headers", respGetHeaders);
  lua_setfield(L, -2, "resp");
  setFn(L, "decode_args", decodeArgs);
  setFn(L, "exec", ngxExec);
}

}  // namespace tidegate::lua
