// nginx's rewrite phases: the server's rewrite-module directives (set,
// return, set_by_lua*) in conf order, then the matched location's, before
// any rewrite_by_lua*. A `return` ends the list; set_by_lua* runs its Lua
// synchronously through the content handler.
#pragma once

#include "conf/config.h"
#include "http/content_handler.h"
#include "http/request.h"

namespace tidegate::http {

struct RewriteOutcome {
  enum class Kind {
    kContinue,  // no return: go on to the Lua phases or the content
    kReturn,    // `ret` answers the request
    kError,     // set_by_lua* failed (logged): answer 500
  };
  Kind kind = Kind::kContinue;
  const conf::ReturnAction* ret = nullptr;
};

// Runs r.server's list (unless `with_server` is false: a location jump
// re-enters at the location's, as nginx's `rewrite ... last` does), then
// r.location's. `lua` may be null (no Lua VM): set_by_lua* is then an error.
RewriteOutcome runRewritePhases(Request& r, ContentHandler* lua, bool with_server = true);

}  // namespace tidegate::http
