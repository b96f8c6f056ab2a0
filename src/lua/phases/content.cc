#include "lua/phases/content.h"

#include "core/clock.h"
#include "core/log.h"
#include "http/variables.h"

namespace tidegate::lua {

RequestContext::RequestContext(Vm& vm, uv_loop_t* loop, http::Request& r, const http::LuaPhases& phases,
                               http::ContentSink& sink)
    : LuaTask(vm, loop), req_(&r), sink_(sink), phases_(phases) {
  // The request started start_ms (loop clock) ago, in wall-clock terms.
  uint64_t age = uv_now(loop) > r.start_ms ? uv_now(loop) - r.start_ms : 0;
  start_wall_ms_ = core::wallMs() - age;
}

// Destroying the task (the connection went away, or the request ended)
// cancels what its coroutines wait for (LuaTask's destructor).
RequestContext::~RequestContext() {
  // End the coroutines while this object is whole: some waits (read_body,
  // flush) unregister from it.
  killAll();
  setGuard(nullptr);
  budget_.reset();
  handler_budget_.reset();
  if (on_abort_ref_ != LUA_NOREF) luaL_unref(vm().state(), LUA_REGISTRYINDEX, on_abort_ref_);
}

bool RequestContext::setOnAbort(lua_State* L) {
  if (on_abort_ref_ != LUA_NOREF) return false;
  on_abort_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  return true;
}

// The body arrived: ngx.req.read_body returns in every coroutine waiting
// in it (each wake removes its waiter; the handler may end meanwhile).
void RequestContext::bodyComplete() {
  if (downstream_) downstream_->bodyChanged();
  if (body_waiters_.empty()) return;
  mutableReq().body.markRead();
  while (!body_waiters_.empty() && !done_) wake(body_waiters_.front(), 0);
}

// More of a body that ngx.req.socket() reads as it arrives.
void RequestContext::bodyAvailable() {
  if (downstream_) downstream_->bodyChanged();
}

// lua_check_client_abort on and the client left: its ngx.on_abort handler
// runs as a light thread (the request goes on unless it calls ngx.exit);
// without one, the request ends here with 499, as OpenResty does.
void RequestContext::clientAborted() {
  if (done_) return;
  if (on_abort_ref_ != LUA_NOREF) {
    lua_rawgeti(vm().state(), LUA_REGISTRYINDEX, on_abort_ref_);
    luaL_unref(vm().state(), LUA_REGISTRYINDEX, on_abort_ref_);
    on_abort_ref_ = LUA_NOREF;
    spawnFromLoop();  // may end this task
    return;
  }
  killAll();
  result_ = http::ContentResult{};
  result_.status = 499;
  result_.aborted = true;
  finish();
}

void RequestContext::start() { nextPhase(); }

// Starts the next phase that has code; after the last one, finishes. Each
// handler gets an entry coroutine of its own; ngx.ctx carries across.
void RequestContext::nextPhase() {
  while (step_ != Step::kDone) {
    const conf::LuaCode* code = nullptr;
    switch (step_) {
      case Step::kRewrite: code = phases_.rewrite; phase_ = Phase::kRewrite; break;
      case Step::kAccess: code = phases_.access; phase_ = Phase::kAccess; break;
      case Step::kContent: code = phases_.content; phase_ = Phase::kContent; break;
      case Step::kDone:
      case Step::kAlone: break;
    }
    if (!code) {
      step_ = static_cast<Step>(static_cast<int>(step_) + 1);
      continue;
    }
    if (code->kind == conf::LuaCode::Kind::kFunction) {
      startFunction(*code);  // may end this task
      return;
    }
    std::string err;
    if (!vm().push(*code, this, &err)) {  // Stack: [] -> [fn]
      TG_LOG(core::LogLevel::kError, "failed to load %s_by_lua code: %s", phaseName(phase_), err.c_str());
      result_ = http::ContentResult{};
      result_.status = 500;
      finish();
      return;
    }
    beginBudget();
    startEntry();  // may end this task
    return;
  }
  // Every phase ended without a response and there is no content handler.
  if (result_.body.empty() && result_.status == 200 && result_.headers.empty()) result_.declined = true;
  finish();
}

// A handler's coroutines ended or one called ngx.exit. In rewrite and
// access, ending (or ngx.exit(ngx.OK)) with nothing printed moves on to the
// next phase, as in OpenResty; ngx.exit(status >= 200), output, or the
// content phase produce the response.
void RequestContext::phaseEnded() {
  endBudget();
  if (step_ == Step::kAlone) {
    aloneEnded(true);
    return;
  }
  if (result_.redirect != http::ContentResult::Redirect::kNone) {
    finish();
    return;
  }
  bool responded = exit_status_ >= 200 || !result_.body.empty() || sink_.headersSent();
  if (step_ == Step::kContent || responded) {
    finish();
    return;
  }
  step_ = static_cast<Step>(static_cast<int>(step_) + 1);
  nextPhase();
}

void RequestContext::beginBudget() {
  uint64_t ms = req_->settings().lua_budget_timeout_ms.value_or(0);
  if (ms == 0) {
    endBudget();
    setGuard(nullptr);
    return;
  }
  if (!handler_budget_) handler_budget_.emplace(loop(), this);
  handler_budget_->begin(ms);
  setGuard(&*handler_budget_);
}

void RequestContext::budgetKilled(const std::string& where) {
  endBudget();
  if (done_) return;
  TG_LOG_CONN(core::LogLevel::kError, req_->conn ? req_->conn->id : 0, "%s_by_lua* killed: %s; %s%s",
              phaseName(phase_), budgetExceeded(handler_budget_->budgetMs()).c_str(), where.c_str(),
              http::describeRequest(*req_).c_str());
  if (step_ == Step::kAlone) {
    aloneEnded(false);
    return;
  }
  fail(500);
}

void RequestContext::startFunction(const conf::LuaCode& code) {
  if (code.path) {
    http::evaluate(*code.path, *req_, &function_);
  } else if (code.capture >= 0 && req_->location && req_->location->regex) {
    req_->location->regex->capture(req_->uri, code.capture, &function_);
  } else {
    function_ = code.source;
  }
  std::string err;
  switch (vm().functions().push(vm().state(), function_, &err)) {  // Stack: [] -> [run, chunk]
    case Functions::Push::kNotFound:
      fail(404);
      return;
    case Functions::Push::kError:
      TG_LOG(core::LogLevel::kError, "function \"%s\" cannot run: %s%s", function_.c_str(), err.c_str(),
             http::describeRequest(*req_).c_str());
      fail(500);
      return;
    case Functions::Push::kOk: break;
  }
  budget_ = std::make_unique<sandbox::BudgetRun>(vm().state(), loop(), sandbox::Limits::of(req_->settings()),
                                                 [this] { functionTimedOut(); });
  setGuard(budget_.get());
  startEntry(1);  // may end this task
}

// The wall-clock budget passed while the function waited.
void RequestContext::functionTimedOut() {
  if (done_) return;
  TG_LOG_CONN(core::LogLevel::kError, req_->conn ? req_->conn->id : 0, "function \"%s\" killed: %s exceeded%s",
              function_.c_str(), budget_->describe().c_str(), http::describeRequest(*req_).c_str());
  killAll();
  fail(500);
}

void RequestContext::fail(int status) {
  bool sent = sink_.headersSent();
  result_ = http::ContentResult{};
  result_.status = status;
  result_.aborted = sent;  // too late for a status: cut the response
  finish();
}

// A runtime error in the entry coroutine: 500, with the message and
// traceback in the error log in OpenResty's words (for a function, its
// name, and the budget that killed it if one did).
void RequestContext::onError(std::string trace) {
  uint64_t conn_id = req_->conn ? req_->conn->id : 0;
  if (budget_) {
    if (budget_->killed() != sandbox::Budget::kNone) {
      TG_LOG_CONN(core::LogLevel::kError, conn_id, "function \"%s\" killed: %s exceeded%s", function_.c_str(),
                  budget_->describe().c_str(), http::describeRequest(*req_).c_str());
    } else {
      TG_LOG_CONN(core::LogLevel::kError, conn_id, "function \"%s\" failed: %s%s", function_.c_str(), trace.c_str(),
                  http::describeRequest(*req_).c_str());
    }
    fail(500);
    return;
  }
  if (step_ == Step::kAlone) {
    TG_LOG_CONN(core::LogLevel::kError, conn_id, "failed to run %s_by_lua*: %s%s", phaseName(phase_), trace.c_str(),
                http::describeRequest(*req_).c_str());
    aloneEnded(false);
    return;
  }
  TG_LOG_CONN(core::LogLevel::kError, conn_id,
              "lua entry thread aborted: runtime error: %s, client: %s, request: \"%.*s\"", trace.c_str(),
              req_->conn ? req_->conn->remote_addr.c_str() : "", static_cast<int>(req_->head->request_line.len),
              req_->base + req_->head->request_line.off);
  result_.status = 500;
  result_.body.clear();
  result_.headers.clear();
  result_.aborted = sink_.headersSent();  // too late for a 500: cut the response
  finish();
}

void RequestContext::finish() {
  endBudget();
  if (done_) return;
  done_ = true;
  sink_.finish(std::move(result_), this);
}

bool RequestContext::runAlone(const conf::LuaCode& code, Phase phase, bool* ok) {
  std::string err;
  if (!vm().push(code, this, &err)) {  // Stack: [] -> [fn]
    TG_LOG(core::LogLevel::kError, "failed to load %s_by_lua code: %s", phaseName(phase), err.c_str());
    *ok = false;
    return false;
  }
  step_ = Step::kAlone;
  phase_ = phase;
  beginBudget();
  startEntry();  // may end it
  *ok = alone_ok_;
  return !done_;
}

void RequestContext::aloneEnded(bool ok) {
  endBudget();
  done_ = true;
  alone_ok_ = ok;
  if (ended_) ended_(ok);
}

// log_by_lua* runs in a task of its own, so that one that waits can
// outlive the connection's request (which goes on to the next one).
std::unique_ptr<http::ContentTask> LuaContentHandler::runLog(http::Request& r, const conf::LuaCode& code,
                                                             http::ContentTask* task,
                                                             std::function<void(http::ContentTask*)> ended) {
  auto log = std::make_unique<RequestContext>(vm_, loop_, r, http::LuaPhases{}, log_sink_);
  if (auto* ctx = dynamic_cast<RequestContext*>(task)) log->inherit(*ctx);
  bool ok = true;
  if (!log->runAlone(code, Phase::kLog, &ok)) return nullptr;
  log->detach();
  RequestContext* raw = log.get();
  log->whenEnded([raw, ended = std::move(ended)](bool) { ended(raw); });
  return log;
}

std::unique_ptr<http::ContentTask> LuaContentHandler::start(http::Request& r, const http::LuaPhases& phases,
                                                            http::ContentSink& sink) {
  auto ctx = std::make_unique<RequestContext>(vm_, loop_, r, phases, sink);
  ctx->start();
  return ctx;
}

}  // namespace tidegate::lua
