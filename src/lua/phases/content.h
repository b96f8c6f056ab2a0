// The Lua request phases: rewrite_by_lua*, access_by_lua*, content_by_lua*,
// run in that order for one request, each handler in a coroutine of the
// worker's VM, sharing ngx.ctx. A yielding API (ngx.sleep) arms a libuv
// event and yields; the event resumes the coroutine; destroying the task
// cancels the event.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "http/content_handler.h"
#include "lua/vm.h"

namespace tidegate::lua {

// The per-request state the ngx API reaches through Vm::current().
class RequestContext : public http::ContentTask {
 public:
  RequestContext(Vm& vm, uv_loop_t* loop, const http::Request& r, const http::LuaPhases& phases,
                 http::ContentSink& sink);
  ~RequestContext() override;

  // Runs the first phase that has code.
  void start();
  // log_by_lua*: runs `code` to completion in a coroutine of its own, in
  // this request's context (ngx.ctx); errors are logged, nothing else.
  void runLog(const conf::LuaCode& code);
  Phase phase() const { return phase_; }

  const http::Request& request() const { return req_; }
  http::ContentResult& result() { return result_; }
  lua_State* coroutine() const { return co_; }

  // ngx.ctx: Stack: [] -> [ctx] (created on first use) / [t] -> [] (replace).
  void pushCtx(lua_State* L);
  void setCtx(lua_State* L);
  // When the request's first byte came, for ngx.req.start_time().
  uint64_t startWallMs() const { return start_wall_ms_; }

  // ngx.exit(status): the handler ends once the coroutine yields.
  void requestExit(int status) {
    exiting_ = true;
    exit_status_ = status;
    if (status >= 200) result_.status = status;
  }
  // ngx.sleep(): resumes the coroutine after `ms`. Stack: unchanged.
  void sleep(uint64_t ms);

 private:
  enum class Step { kRewrite, kAccess, kContent, kDone };
  void nextPhase();
  void resume(int nargs);
  void phaseEnded();
  void finish();
  void fail(lua_State* L);
  static void onTimer(uv_timer_t* t) noexcept;

  Vm& vm_;
  uv_loop_t* loop_;
  const http::Request& req_;
  http::ContentSink& sink_;
  http::LuaPhases phases_;
  Step step_ = Step::kRewrite;
  Phase phase_ = Phase::kRewrite;
  http::ContentResult result_;
  lua_State* co_ = nullptr;
  int co_ref_ = LUA_NOREF;
  int ctx_ref_ = LUA_NOREF;
  uint64_t start_wall_ms_ = 0;
  uv_timer_t* timer_ = nullptr;  // owned until its close callback frees it
  bool exiting_ = false;
  bool waiting_ = false;  // an event (timer) will resume the coroutine
  int exit_status_ = 0;
  bool done_ = false;
};

class LuaContentHandler : public http::ContentHandler {
 public:
  LuaContentHandler(Vm& vm, uv_loop_t* loop) : vm_(vm), loop_(loop) {}
  std::unique_ptr<http::ContentTask> start(const http::Request& r, const http::LuaPhases& phases,
                                           http::ContentSink& sink) override;
  void runLog(const http::Request& r, const conf::LuaCode& code, http::ContentTask* task) override;
  bool runSet(const http::Request& r, const conf::LuaCode& code, const std::vector<std::string>& args,
              std::string* out) override;  // phases/set.cc

 private:
  Vm& vm_;
  uv_loop_t* loop_;
};

}  // namespace tidegate::lua
