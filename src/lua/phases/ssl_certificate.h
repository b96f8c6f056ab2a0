// ssl_certificate_by_lua*: the code of the server an SNI name selects, run
// once per full handshake from OpenSSL's certificate callback, before a
// certificate is chosen. It runs in a task of its own with no request
// (ngx.var and ngx.req raise "API disabled in the context of
// ssl_certificate_by_lua*"; ngx.ctx is a fresh table), and may wait as in
// OpenResty (ngx.sleep, cosockets, semaphores, light threads): the
// handshake pauses meanwhile. ngx.ssl (api/ngx_ssl.cc) reads the handshake
// and sets its certificates through ssl().
#pragma once

#include <openssl/ssl.h>

#include <functional>
#include <optional>
#include <string>

#include "http/content_handler.h"
#include "lua/task.h"
#include "lua/watchdog.h"

namespace tidegate::lua {

class SslCertTask : public LuaTask, public http::ContentTask {
 public:
  // `budget_ms`: lua_budget_timeout (0: none).
  SslCertTask(Vm& vm, uv_loop_t* loop, SSL* ssl, const http::ConnInfo& conn, const conf::LuaCode& code,
              uint64_t budget_ms);
  ~SslCertTask() override {
    killAll();
    setGuard(nullptr);
  }

  // Starts the code. False when it ended now (*ok: the handshake may go
  // on); true while it waits: `ended` follows, called from inside this task.
  bool run(bool* ok, std::function<void(bool ok)> ended);
  Phase phase() const override { return Phase::kSslCert; }
  // ngx.exit(ngx.ERROR) (or a status >= 300) fails the handshake;
  // ngx.exit(ngx.OK) ends the code as returning does.
  void exitWithStatus(int status) override {
    exit_status_ = status;
    requestExit();
  }

  SSL* ssl() const { return ssl_; }
  const http::ConnInfo& conn() const { return conn_; }

 private:
  void onDone() override { ended(true); }
  void onExit() override;
  void onError(std::string trace) override;
  void onBudgetKill(std::string trace) override;
  void ended(bool ok);
  // ", context: ssl_certificate_by_lua*, client: ..., server: ..." for the log.
  std::string context() const;

  SSL* ssl_;
  const http::ConnInfo& conn_;
  const conf::LuaCode& code_;
  std::function<void(bool)> ended_;
  int exit_status_ = 0;
  bool done_ = false;
  bool ok_ = true;
  std::optional<HandlerBudget> budget_;  // lua_budget_timeout
};

}  // namespace tidegate::lua
