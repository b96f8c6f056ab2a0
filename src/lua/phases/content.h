// content_by_lua*: each request runs its handler in a coroutine of the
// worker's VM. A yielding API (ngx.sleep) arms a libuv event and yields;
// the event resumes the coroutine; destroying the task cancels the event.
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
  RequestContext(Vm& vm, uv_loop_t* loop, const http::Request& r, http::ContentSink& sink);
  ~RequestContext() override;

  // Starts the handler function that is on the VM's stack top (popped).
  void start();

  const http::Request& request() const { return req_; }
  http::ContentResult& result() { return result_; }
  lua_State* coroutine() const { return co_; }

  // ngx.ctx: Stack: [] -> [ctx] (created on first use) / [t] -> [] (replace).
  void pushCtx(lua_State* L);
  void setCtx(lua_State* L);
  // When the request's first byte came, for ngx.req.start_time().
  uint64_t startWallMs() const { return start_wall_ms_; }

  // ngx.exit(): the handler ends once the coroutine yields.
  void requestExit() { exiting_ = true; }
  // ngx.sleep(): resumes the coroutine after `ms`. Stack: unchanged.
  void sleep(uint64_t ms);

 private:
  void resume(int nargs);
  void finish();
  void fail(lua_State* L);
  static void onTimer(uv_timer_t* t) noexcept;

  Vm& vm_;
  uv_loop_t* loop_;
  const http::Request& req_;
  http::ContentSink& sink_;
  http::ContentResult result_;
  lua_State* co_ = nullptr;
  int co_ref_ = LUA_NOREF;
  int ctx_ref_ = LUA_NOREF;
  uint64_t start_wall_ms_ = 0;
  uv_timer_t* timer_ = nullptr;  // owned until its close callback frees it
  bool exiting_ = false;
  bool done_ = false;
};

class LuaContentHandler : public http::ContentHandler {
 public:
  LuaContentHandler(Vm& vm, uv_loop_t* loop) : vm_(vm), loop_(loop) {}
  std::unique_ptr<http::ContentTask> start(const http::Request& r, const conf::LuaCode& code,
                                           http::ContentSink& sink) override;

 private:
  Vm& vm_;
  uv_loop_t* loop_;
};

}  // namespace tidegate::lua
