// The Lua request phases: rewrite_by_lua*, access_by_lua*, content_by_lua*,
// run in that order for one request, each handler in a coroutine of the
// worker's VM, sharing ngx.ctx. The coroutines are scheduled by LuaTask
// (lua/task.h); destroying the request's task cancels what they wait for.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "http/content_handler.h"
#include "lua/sandbox/budget.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "lua/watchdog.h"

namespace tidegate::lua {

// The per-request state the ngx API reaches through Vm::current().
class RequestContext : public LuaTask, public http::ContentTask, public core::Recycled<RequestContext> {
 public:
  RequestContext(Vm& vm, uv_loop_t* loop, http::Request& r, const http::LuaPhases& phases,
                 http::ContentSink& sink);
  ~RequestContext() override;

  // Runs the first phase that has code.
  void start();
  // One handler of `phase` (log_by_lua*, balancer_by_lua*) as the entry
  // of this task, a context of its own that shares the request's ngx.ctx
  // and globals through inherit(). An error is logged as "failed to run
  // <phase>_by_lua*: ..."; *ok says whether it ended without one. True if
  // it waits (a cosocket): whenEnded() must follow.
  bool runAlone(const conf::LuaCode& code, Phase phase, bool* ok);
  // `ended(ok)` runs when the waiting handler ends, from inside this task
  // (which must not be freed there).
  void whenEnded(std::function<void(bool ok)> ended) { ended_ = std::move(ended); }
  // The log handler waits and the connection moves on: the task carries on
  // with a copy of the request.
  void detach() {
    detached_ = std::make_unique<http::DetachedRequest>(*req_);
    req_ = &detached_->req();
    keepInherited();
  }
  Phase phase() const override { return phase_; }
  RequestContext* request() override { return this; }

  const http::Request& req() const { return *req_; }
  // For the APIs that change the request (ngx.req.set_*, the body).
  http::Request& mutableReq() { return *req_; }
  http::ContentResult& result() { return result_; }

  // Output streaming: ngx.flush, ngx.eof, and large output. Sends the
  // head once, then what was printed; `last` ends the body (ngx.eof).
  void flushOutput(bool last) {
    sink_.flushOutput(result_, last, this);
    if (last) eof_ = true;
  }
  bool headersSent() const { return sink_.headersSent(); }
  bool eofSent() const { return eof_; }
  http::ContentSink& sink() { return sink_; }
  // Scratch space for values handed to Lua (the FFI fast paths).
  std::string& scratch() { return scratch_; }

  // ngx.on_abort(fn): fn (on L's stack top; popped) runs as a light thread
  // if the client goes away. False if one is registered already.
  bool setOnAbort(lua_State* L);
  void clientAborted() override;
  // ngx.req.read_body while the body still arrives: coroutines waiting for
  // it (lua/api/ngx_req_body.cc), resumed by bodyComplete().
  std::vector<Co*>& bodyWaiters() { return body_waiters_; }
  void bodyComplete() override;
  void bodyAvailable() override;

  // ngx.req.socket's state for this request (lua/api/ngx_req_socket.cc):
  // told when more of the body arrived or it ended; destroyed with the
  // request, after its coroutines (and so their waits) are gone.
  class Downstream {
   public:
    virtual ~Downstream() = default;
    virtual void bodyChanged() = 0;
  };
  std::unique_ptr<Downstream>& downstream() { return downstream_; }

  // body_filter_by_lua*: ngx.arg[1] and ngx.arg[2] while the filter runs.
  struct FilterArgs {
    std::string* chunk;
    bool* eof;
  };
  FilterArgs* filterArgs() const { return filter_args_; }
  void setFilterArgs(FilterArgs* a) { filter_args_ = a; }

  // balancer_by_lua*: what ngx.balancer reads and sets while the code runs
  // (null otherwise).
  http::BalancerCall* balancerCall() const { return balancer_call_; }
  void setBalancerCall(http::BalancerCall* c) { balancer_call_ = c; }

  // When the request's first byte came, for ngx.req.start_time().
  uint64_t startWallMs() const { return start_wall_ms_; }

  // ngx.exit(status): the handler ends once the caller yields.
  void exit(int status) {
    requestExit();
    exit_status_ = status;
    if (status >= 200) result_.status = status;
  }
  // ngx.exec / ngx.req.set_uri(uri, true): the handler ends once the
  // caller yields and the connection carries the request on elsewhere.
  void redirect(http::ContentResult::Redirect kind, std::string uri, std::string args) {
    requestExit();
    result_.redirect = kind;
    result_.redirect_uri = std::move(uri);
    result_.redirect_args = std::move(args);
  }

 private:
  enum class Step { kRewrite, kAccess, kContent, kDone, kAlone };
  void nextPhase();
  void phaseEnded();
  void finish();
  void aloneEnded(bool ok);
  void onDone() override { phaseEnded(); }
  void onExit() override { phaseEnded(); }
  void onError(std::string trace) override;
  void onBudgetKill(std::string trace) override { budgetKilled(trace); }
  // lua_budget_timeout: the handler about to start gets its budget.
  void beginBudget();
  void endBudget() {
    if (handler_budget_) handler_budget_->end();
  }
  // The handler passed its budget, running (`where`: its traceback) or
  // waiting; its coroutines are gone.
  void budgetKilled(const std::string& where);
  // content_by_function: the function in a fresh sandbox, under the
  // lua_sandbox_* budgets; 404 for an unknown name.
  void startFunction(const conf::LuaCode& code);
  void functionTimedOut();
  void fail(int status);

  http::Request* req_;
  http::ContentSink& sink_;
  std::unique_ptr<http::DetachedRequest> detached_;  // after detach()
  std::function<void(bool)> ended_;
  bool alone_ok_ = true;
  http::LuaPhases phases_;
  Step step_ = Step::kRewrite;
  Phase phase_ = Phase::kRewrite;
  http::ContentResult result_;
  uint64_t start_wall_ms_ = 0;
  int exit_status_ = 0;
  bool done_ = false;
  bool eof_ = false;
  int on_abort_ref_ = LUA_NOREF;
  FilterArgs* filter_args_ = nullptr;
  http::BalancerCall* balancer_call_ = nullptr;
  std::vector<Co*> body_waiters_;
  std::unique_ptr<Downstream> downstream_;
  std::string scratch_;
  std::string function_;  // content_by_function: the function's name
  std::unique_ptr<sandbox::BudgetRun> budget_;
  std::optional<HandlerBudget> handler_budget_;  // lua_budget_timeout
};

// Runs `code` to completion in `ctx`'s context as `phase` (lua_pcall on a
// thread of its own, so nothing in it can yield): the filters and
// balancer_by_lua*. An error is logged, with its traceback, as "failed to
// run <phase>_by_lua*: ..."; false then. phases/filter.cc.
bool runToCompletion(Vm& vm, const http::Request& r, const conf::LuaCode& code, Phase phase, RequestContext* ctx);

// The sink of a context that never answers: log_by_lua* without earlier
// Lua phases (the response is out: headers count as sent), set_by_lua* and
// balancer_by_lua*.
class DetachedSink : public http::ContentSink {
 public:
  explicit DetachedSink(bool headers_sent) : headers_sent_(headers_sent) {}
  void finish(http::ContentResult, http::ContentTask*) override {}
  void flushOutput(http::ContentResult&, bool, http::ContentTask*) override {}
  bool headersSent() const override { return headers_sent_; }
  bool waitDrain(std::function<void()>) override { return true; }
  void cancelDrain() override {}
  void streamBody(std::string_view, bool, http::ContentTask*) override {}
  size_t pendingOutput() const override { return 0; }
  void holdOutput(bool) override {}
  bool takeRequestBody(std::string* out) override {
    out->clear();
    return true;
  }
  void startTunnel(const http::HeaderList&, TunnelPeer*) override {}
  void takeOver(TunnelPeer*) override {}
  void tunnelWrite(std::string_view) override {}
  void pauseTunnel(bool) override {}

 private:
  bool headers_sent_;
};

class LuaContentHandler : public http::ContentHandler {
 public:
  LuaContentHandler(Vm& vm, uv_loop_t* loop) : vm_(vm), loop_(loop) {}
  std::unique_ptr<http::ContentTask> start(http::Request& r, const http::LuaPhases& phases,
                                           http::ContentSink& sink) override;
  std::unique_ptr<http::ContentTask> runLog(http::Request& r, const conf::LuaCode& code, http::ContentTask* task,
                                            std::function<void(http::ContentTask*)> ended) override;
  std::unique_ptr<http::ContentTask> detached(http::Request& r, http::ContentSink& sink) override;
  bool runHeaderFilter(http::Request& r, const conf::LuaCode& code, http::ContentTask* task, int* status,
                       http::HeaderList* headers) override;
  bool runBodyFilter(http::Request& r, const conf::LuaCode& code, http::ContentTask* task, std::string* chunk,
                     bool* eof) override;
  bool runSet(http::Request& r, const conf::LuaCode& code, const std::vector<std::string>& args,
              std::string* out) override;  // phases/set.cc
  std::unique_ptr<http::ContentTask> runBalancer(http::Request& r, const conf::LuaCode& code,
                                                 http::ContentTask* task, http::BalancerCall* call, bool* ok,
                                                 std::function<void(bool)> done) override;  // phases/balancer.cc
  std::unique_ptr<http::ContentTask> runSslCertificate(SSL* ssl, const http::ConnInfo& conn,
                                                       const conf::LuaCode& code, uint64_t budget_ms, bool* ok,
                                                       std::function<void(bool)> done) override;  // phases/ssl_certificate.cc
  // Lua balancer modules (phases/balancer.cc).
  int newLuaBalancer(const std::string& module, const std::vector<LuaBalancerPeer>& peers, std::string* err) override;
  bool luaBalancerPick(int handle, std::string* id, std::string* err) override;
  void luaBalancerFeedback(int handle, const std::string& id, bool ok, double latency_ms) override;
  void freeLuaBalancer(int handle) override;

 private:
  Vm& vm_;
  uv_loop_t* loop_;
  DetachedSink log_sink_{true};        // the log phase's: the response is out
  DetachedSink balancer_sink_{false};  // the balancer never answers
};

}  // namespace tidegate::lua
