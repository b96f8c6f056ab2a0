#include "lua/phases/ssl_certificate.h"

#include "core/log.h"
#include "lua/phases/content.h"

namespace tidegate::lua {

using core::LogLevel;

SslCertTask::SslCertTask(Vm& vm, uv_loop_t* loop, SSL* ssl, const http::ConnInfo& conn, const conf::LuaCode& code,
                         uint64_t budget_ms)
    : LuaTask(vm, loop), ssl_(ssl), conn_(conn), code_(code) {
  if (budget_ms == 0) return;
  budget_.emplace(loop, this);
  budget_->begin(budget_ms);
}

bool SslCertTask::run(bool* ok, std::function<void(bool)> ended) {
  std::string err;
  if (!vm().push(code_, this, &err)) {  // Stack: [] -> [fn]
    TG_LOG_CONN(LogLevel::kError, conn_.id, "failed to load ssl_certificate_by_lua code: %s%s", err.c_str(),
                context().c_str());
    *ok = false;
    return false;
  }
  if (budget_) setGuard(&*budget_);
  startEntry();  // may end the code
  if (done_) {
    *ok = ok_;
    return false;
  }
  ended_ = std::move(ended);
  return true;
}

// As OpenResty: ngx.exit(ngx.ERROR) or an HTTP error status aborts the
// handshake; ngx.exit(ngx.OK) (or any other status) lets it go on.
void SslCertTask::onExit() {
  if (exit_status_ == -1 || exit_status_ >= 300) {
    const char* chunk = code_.chunkname.c_str();
    if (*chunk == '=' || *chunk == '@') chunk++;  // Lua's chunk-name prefixes
    TG_LOG_CONN(LogLevel::kError, conn_.id, "%s aborted the SSL handshake with ngx.exit(%d)%s", chunk, exit_status_,
                context().c_str());
    ended(false);
    return;
  }
  ended(true);
}

void SslCertTask::onError(std::string trace) {
  TG_LOG_CONN(LogLevel::kError, conn_.id, "lua entry thread aborted: runtime error: %s%s", trace.c_str(),
              context().c_str());
  ended(false);
}

void SslCertTask::onBudgetKill(std::string trace) {
  if (done_) return;
  TG_LOG_CONN(LogLevel::kError, conn_.id, "ssl_certificate_by_lua* killed: %s; %s%s",
              budgetExceeded(budget_->budgetMs()).c_str(), trace.c_str(), context().c_str());
  ended(false);
}

void SslCertTask::ended(bool ok) {
  if (budget_) budget_->end();
  done_ = true;
  ok_ = ok;
  if (ended_) ended_(ok);  // the owner frees this task later, never here
}

std::string SslCertTask::context() const {
  std::string s = ", context: ssl_certificate_by_lua*, client: ";
  s.append(conn_.remote_addr).append(", server: ").append(conn_.local_addr).append(":");
  s.append(std::to_string(conn_.local_port));
  return s;
}

std::unique_ptr<http::ContentTask> LuaContentHandler::runSslCertificate(SSL* ssl, const http::ConnInfo& conn,
                                                                        const conf::LuaCode& code, uint64_t budget_ms,
                                                                        bool* ok, std::function<void(bool)> done) {
  auto task = std::make_unique<SslCertTask>(vm_, loop_, ssl, conn, code, budget_ms);
  if (!task->run(ok, std::move(done))) return nullptr;
  return task;
}

}  // namespace tidegate::lua
