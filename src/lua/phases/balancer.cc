// balancer_by_lua*: an upstream's code, run by the proxy before every try
// of a request to choose its peer. As in OpenResty it runs to completion
// with lua_pcall, so nothing in it can yield: ngx.sleep, semaphores,
// threads and output raise "API disabled in the context of
// balancer_by_lua*" (ngx.exit records its status and returns). It runs in
// the request's Lua context, so ngx.ctx is the one access_by_lua* filled;
// ngx.var and the ngx.req reads work, and ngx.req.set_header too (it
// reaches the upstream with ngx.balancer.recreate_request()).
// ngx.balancer (api/ngx_balancer.cc) reads and fills `call` meanwhile.
#include <memory>

#include "lua/phases/content.h"

namespace tidegate::lua {

bool LuaContentHandler::runBalancer(http::Request& r, const conf::LuaCode& code, http::ContentTask* task,
                                    http::BalancerCall* call) {
  auto* ctx = dynamic_cast<RequestContext*>(task);
  DetachedSink sink(false);  // the balancer never answers
  std::unique_ptr<RequestContext> fresh;
  if (!ctx) {
    fresh = std::make_unique<RequestContext>(vm_, loop_, r, http::LuaPhases{}, sink);
    ctx = fresh.get();
  }
  http::BalancerCall* prev = ctx->balancerCall();
  ctx->setBalancerCall(call);
  bool ok = runToCompletion(vm_, r, code, Phase::kBalancer, ctx);
  ctx->setBalancerCall(prev);
  return ok;
}

}  // namespace tidegate::lua
