// extern "C" entry points for the Lua modules under lua/ (declared in
// include/tidegate/ffi.h). They reach the VM through Vm::active(), since an
// FFI call carries no lua_State.
#include "tidegate/ffi.h"

#include <unistd.h>

#include "core/clock.h"
#include "http/ascii.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/vm.h"

using tidegate::lua::LuaTask;
using tidegate::lua::Phase;
using tidegate::lua::RequestContext;
using tidegate::lua::Vm;

namespace tidegate::lua {

LuaTask* ffiTask(void* r) {
  Vm* vm = Vm::active();
  LuaTask* task = vm ? vm->current() : nullptr;
  return task && task == r ? task : nullptr;
}

RequestContext* ffiRequest(void* r) {
  LuaTask* task = ffiTask(r);
  return task ? task->request() : nullptr;
}

}  // namespace tidegate::lua

using tidegate::lua::ffiRequest;
using tidegate::lua::ffiTask;

extern "C" {

void* tg_get_request(void) {
  Vm* vm = Vm::active();
  return vm ? static_cast<void*>(vm->current()) : nullptr;
}

int tg_process_type(void) {
  Vm* vm = Vm::active();
  if (!vm) return 0;
  if (vm->workerId() >= 0) return vm->config().master_process ? 2 : 0;
  return vm->config().master_process ? 1 : 0;
}

int tg_master_pid(void) {
  Vm* vm = Vm::active();
  if (vm && vm->workerId() >= 0 && vm->config().master_process) return static_cast<int>(getppid());
  return static_cast<int>(getpid());
}

double tg_now(void) { return tidegate::core::wallSeconds(); }

int tg_var_get(void* r, const char* name, size_t len, const char** value, size_t* value_len) {
  RequestContext* ctx = ffiRequest(r);
  if (!ctx) return -1;
  std::string& out = ctx->scratch();
  if (!tidegate::lua::readVariable(ctx, std::string_view(name, len), &out)) return 1;
  *value = out.data();
  *value_len = out.size();
  return 0;
}

int tg_output(void* r, const char* data, size_t len, int newline) {
  RequestContext* ctx = ffiRequest(r);
  if (!ctx || !tidegate::lua::outputAllowed(ctx)) return -1;
  std::string& body = ctx->result().body;
  body.append(data, len);
  if (newline) body.push_back('\n');
  tidegate::lua::outputAppended(ctx);
  return 0;
}

int tg_output_integer(void* r, double n, int newline) {
  RequestContext* ctx = ffiRequest(r);
  if (!ctx || !tidegate::lua::outputAllowed(ctx)) return -1;
  std::string& body = ctx->result().body;
  if (!tidegate::lua::appendInteger(n, &body)) return -1;
  if (newline) body.push_back('\n');
  tidegate::lua::outputAppended(ctx);
  return 0;
}

int tg_req_headers(void* r, tg_header_t* out, int n, int raw) {
  RequestContext* ctx = ffiRequest(r);
  if (!ctx || !ctx->req().head) return -1;
  // The lower-cased names go into one buffer, sized first so that it does
  // not move while the pointers into it are handed out.
  int total = 0;
  size_t names_size = 0;
  ctx->req().forEachHeader([&](std::string_view name, std::string_view) {
    if (total++ < n) names_size += name.size();
    return true;
  });
  std::string& names = ctx->scratch();
  names.clear();
  names.reserve(names_size);
  int i = 0;
  ctx->req().forEachHeader([&](std::string_view name, std::string_view value) {
    if (i == n) return false;
    tg_header_t& h = out[i++];
    if (raw) {
      h.name = name.data();
    } else {
      size_t at = names.size();
      for (char c : name) names.push_back(tidegate::http::asciiLower(c));
      h.name = names.data() + at;
    }
    h.name_len = name.size();
    h.value = value.data();
    h.value_len = value.size();
    return true;
  });
  return total;
}

int tg_ctx_ref(void* r) {
  LuaTask* task = ffiTask(r);
  if (!task || task->ctxRef() == LUA_NOREF) return -1;
  return task->ctxRef();
}

int tg_header_set(void* r, const char* name, size_t name_len, const char* value, size_t value_len) {
  RequestContext* ctx = ffiRequest(r);
  // set_by_lua* refuses it and a sent head logs an error: the slow path does both.
  if (!ctx || Vm::active()->phase() == Phase::kSet || ctx->headersSent()) return -1;
  tidegate::lua::setResponseHeader(ctx, std::string(name, name_len), std::string_view(value, value_len));
  return 0;
}

unsigned char* ngx_hex_dump(unsigned char* dst, const unsigned char* src, size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    *dst++ = static_cast<unsigned char>(kDigits[src[i] >> 4]);
    *dst++ = static_cast<unsigned char>(kDigits[src[i] & 0xf]);
  }
  return dst;
}

intptr_t ngx_atoi(const unsigned char* line, size_t n) {
  if (n == 0) return -1;
  constexpr intptr_t kMax = INTPTR_MAX;
  intptr_t value = 0;
  for (size_t i = 0; i < n; i++) {
    if (line[i] < '0' || line[i] > '9') return -1;
    intptr_t digit = line[i] - '0';
    if (value > (kMax - digit) / 10) return -1;
    value = value * 10 + digit;
  }
  return value;
}

}  // extern "C"
