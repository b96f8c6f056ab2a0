#include "lua/phases/content.h"

#include "core/clock.h"
#include "core/log.h"

namespace tidegate::lua {

RequestContext::RequestContext(Vm& vm, uv_loop_t* loop, const http::Request& r, const http::LuaPhases& phases,
                               http::ContentSink& sink)
    : vm_(vm), loop_(loop), req_(r), sink_(sink), phases_(phases) {
  // The request started start_ms (loop clock) ago, in wall-clock terms.
  uint64_t age = uv_now(loop) > r.start_ms ? uv_now(loop) - r.start_ms : 0;
  start_wall_ms_ = core::wallMs() - age;
}

void RequestContext::pushCtx(lua_State* L) {
  if (ctx_ref_ == LUA_NOREF) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    ctx_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref_);
}

void RequestContext::setCtx(lua_State* L) {
  if (ctx_ref_ != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ctx_ref_);
  ctx_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
}

RequestContext::~RequestContext() {
  // Cancel what the coroutine waits for; the handle frees itself once closed.
  if (timer_) {
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  if (co_ref_ != LUA_NOREF) luaL_unref(vm_.state(), LUA_REGISTRYINDEX, co_ref_);
  if (ctx_ref_ != LUA_NOREF) luaL_unref(vm_.state(), LUA_REGISTRYINDEX, ctx_ref_);
}

void RequestContext::start() { nextPhase(); }

// Starts the next phase that has code; after the last one, finishes. Each
// handler gets a coroutine of its own; ngx.ctx carries across.
void RequestContext::nextPhase() {
  while (step_ != Step::kDone) {
    const conf::LuaCode* code = nullptr;
    switch (step_) {
      case Step::kRewrite: code = phases_.rewrite; phase_ = Phase::kRewrite; break;
      case Step::kAccess: code = phases_.access; phase_ = Phase::kAccess; break;
      case Step::kContent: code = phases_.content; phase_ = Phase::kContent; break;
      case Step::kDone: break;
    }
    if (!code) {
      step_ = static_cast<Step>(static_cast<int>(step_) + 1);
      continue;
    }
    lua_State* L = vm_.state();
    std::string err;
    if (!vm_.push(*code, &err)) {  // Stack: [] -> [fn]
      TG_LOG(core::LogLevel::kError, "failed to load %s_by_lua code: %s", phaseName(phase_), err.c_str());
      result_ = http::ContentResult{};
      result_.status = 500;
      finish();
      return;
    }
    if (co_ref_ != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, co_ref_);
    // Stack: [fn] -> []; the coroutine is anchored in the registry while it lives.
    co_ = lua_newthread(L);
    co_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, co_, 1);
    exiting_ = false;
    resume(0);
    return;
  }
  // Every phase ended without a response and there is no content handler.
  if (result_.body.empty() && result_.status == 200 && result_.headers.empty()) result_.declined = true;
  finish();
}

void RequestContext::resume(int nargs) {
  vm_.setCurrent(this, phase_);
  int rc = lua_resume(co_, nargs);
  vm_.setCurrent(nullptr, phase_);
  if (rc == LUA_YIELD && !exiting_) {
    // A plain coroutine.yield() in the entry coroutine: resume on the next
    // loop turn, as OpenResty does, rather than never.
    if (!waiting_) sleep(0);
    return;  // an event will resume it
  }
  if (rc != 0 && rc != LUA_YIELD) {
    fail(co_);
    return;
  }
  phaseEnded();
}

// A handler returned or called ngx.exit. In rewrite and access, ending
// (or ngx.exit(ngx.OK)) with nothing printed moves on to the next phase,
// as in OpenResty; ngx.exit(status >= 200), output, or the content phase
// produce the response.
void RequestContext::phaseEnded() {
  bool responded = exit_status_ >= 200 || !result_.body.empty();
  if (step_ == Step::kContent || responded) {
    finish();
    return;
  }
  step_ = static_cast<Step>(static_cast<int>(step_) + 1);
  nextPhase();
}

// A runtime error: 500, with the message and traceback in the error log in
// OpenResty's words.
void RequestContext::fail(lua_State* L) {
  const char* msg = lua_tostring(L, -1);
  luaL_traceback(vm_.state(), L, msg ? msg : "unknown error", 0);
  const char* trace = lua_tostring(vm_.state(), -1);
  TG_LOG_CONN(core::LogLevel::kError, req_.conn ? req_.conn->id : 0,
              "lua entry thread aborted: runtime error: %s, client: %s, request: \"%.*s\"", trace ? trace : "",
              req_.conn ? req_.conn->remote_addr.c_str() : "", static_cast<int>(req_.head->request_line.len),
              req_.base + req_.head->request_line.off);
  lua_pop(vm_.state(), 1);
  result_.status = 500;
  result_.body.clear();
  result_.headers.clear();
  finish();
}

void RequestContext::finish() {
  if (done_) return;
  done_ = true;
  sink_.finish(std::move(result_), this);
}

void RequestContext::sleep(uint64_t ms) {
  if (!timer_) {
    timer_ = new uv_timer_t;
    uv_timer_init(loop_, timer_);
  }
  timer_->data = this;
  waiting_ = true;
  uv_timer_start(timer_, onTimer, ms, 0);
}

void RequestContext::onTimer(uv_timer_t* t) noexcept {
  auto* ctx = static_cast<RequestContext*>(t->data);
  if (!ctx) return;
  ctx->waiting_ = false;
  ctx->resume(0);
}

void RequestContext::runLog(const conf::LuaCode& code) {
  lua_State* L = vm_.state();
  std::string err;
  if (!vm_.push(code, &err)) {  // Stack: [] -> [fn]
    TG_LOG(core::LogLevel::kError, "failed to load log_by_lua code: %s", err.c_str());
    return;
  }
  lua_State* co = lua_newthread(L);  // Stack: [fn, co]
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_xmove(L, co, 1);
  Phase saved = phase_;
  phase_ = Phase::kLog;
  vm_.setCurrent(this, Phase::kLog);
  int rc = lua_resume(co, 0);
  vm_.setCurrent(nullptr, Phase::kLog);
  phase_ = saved;
  if (rc == LUA_YIELD) {
    TG_LOG(core::LogLevel::kError, "log_by_lua handler yielded: yielding is not supported in the log phase");
  } else if (rc != 0) {
    const char* msg = lua_tostring(co, -1);
    luaL_traceback(L, co, msg ? msg : "unknown error", 0);
    TG_LOG_CONN(core::LogLevel::kError, req_.conn ? req_.conn->id : 0, "failed to run log_by_lua*: %s",
                lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void LuaContentHandler::runLog(const http::Request& r, const conf::LuaCode& code, http::ContentTask* task) {
  if (auto* ctx = dynamic_cast<RequestContext*>(task)) {
    ctx->runLog(code);
    return;
  }
  // No earlier Lua phase: a context of its own, which never finishes a response.
  struct NullSink : http::ContentSink {
    void finish(http::ContentResult, http::ContentTask*) override {}
  } sink;
  RequestContext ctx(vm_, loop_, r, http::LuaPhases{}, sink);
  ctx.runLog(code);
}

std::unique_ptr<http::ContentTask> LuaContentHandler::start(const http::Request& r, const http::LuaPhases& phases,
                                                            http::ContentSink& sink) {
  auto ctx = std::make_unique<RequestContext>(vm_, loop_, r, phases, sink);
  ctx->start();
  return ctx;
}

}  // namespace tidegate::lua
