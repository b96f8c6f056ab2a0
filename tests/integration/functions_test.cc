// Sandboxed functions (docs/functions.md): pushed through /functions, served
// by content_by_function, in a sandbox that user code cannot leave or
// poison for the next request, under budgets (instructions, wall clock,
// memory) that end the request and never the worker.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace tidegate::test {
namespace {

const std::string kToken = "fn-test-token";

std::string adminRequest(const std::string& method, const std::string& path, const std::string& body) {
  std::string req = method;
  req.append(" ").append(path).append(" HTTP/1.1\r\nHost: admin\r\nX-API-KEY: ").append(kToken);
  req.append("\r\nContent-Type: text/plain\r\nContent-Length: ").append(std::to_string(body.size()));
  req.append("\r\n\r\n").append(body);
  return req;
}

Response admin(int port, const std::string& method, const std::string& path, const std::string& body = "") {
  RawClient c(port);
  c.send(adminRequest(method, path, body));
  return c.readResponse();
}

Response push(const Gateway& gw, const std::string& name, const std::string& src) {
  return admin(gw.port2(), "PUT", "/functions/" + name, src);
}

// One worker (so "the same worker serves the next request" is checkable),
// functions at /fn/NAME, and the admin API on port2.
void fnConf(Gateway& gw, const std::string& extra = "") {
  gw.setSimpleConf("location ~ ^/fn/([\\w.-]+)$ { content_by_function $1; }\n"
                   "location = /static { content_by_function hello; }\n"
                   "location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }\n"
                   "location = /trusted { content_by_lua_block {\n"
                   "  ngx.say(string.upper('a'), ' ', type(string.dump), ' ', type(('').dump), ' ',\n"
                   "          type(table.concat), ' ', type(math.floor), ' ', tostring(x_global)) } }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken +
                       ";\nlua_shared_dict d 1m;\nlua_shared_dict secret 1m;\nlua_sandbox_shared_dicts d;\n" + extra,
                   1);
}

const std::string kTrustedOk = "A function function function function nil\n";

TEST(FunctionsTest, PushServeListGetDelete) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/fn/hello").status, 404);
  Response r = push(gw, "hello", "ngx.say('hello ', ngx.var.uri)");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["version"].get<std::string>().size(), 32u);
  EXPECT_EQ(httpGet(gw.port(), "/fn/hello").body, "hello /fn/hello\n");
  EXPECT_EQ(httpGet(gw.port(), "/static").body, "hello /static\n");

  // A chunk that returns a handler: it runs in the same request.
  std::string handler = "local greeting = 'hi'\nreturn function() ngx.say(greeting, ' ', ngx.req.get_method()) end";
  ASSERT_EQ(push(gw, "handler", handler).status, 201);
  EXPECT_EQ(httpGet(gw.port(), "/fn/handler").body, "hi GET\n");

  // A syntax error is a 400 and changes nothing; so is a wrapper breakout.
  r = push(gw, "hello", "ngx.say('x'");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("syntax error"), std::string::npos) << r.body;
  EXPECT_EQ(push(gw, "evil", "end, (function() os.exit(1) end)() --").status, 400);
  EXPECT_EQ(httpGet(gw.port(), "/fn/evil").status, 404);
  EXPECT_EQ(httpGet(gw.port(), "/fn/hello").body, "hello /fn/hello\n");

  nlohmann::json list = nlohmann::json::parse(admin(gw.port2(), "GET", "/functions").body);
  ASSERT_EQ(list["functions"].size(), 2u);
  EXPECT_EQ(list["functions"][1]["name"], "hello");
  r = admin(gw.port2(), "GET", "/functions/hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ngx.say('hello ', ngx.var.uri)");
  EXPECT_EQ(admin(gw.port2(), "GET", "/functions/nope").status, 404);

  EXPECT_EQ(admin(gw.port2(), "DELETE", "/functions/hello").status, 200);
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/fn/hello").status == 404; }));
  EXPECT_TRUE(gw.seriousLogLines().empty());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(FunctionsTest, VersionsRollbackAndRestart) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(push(gw, "v", "ngx.say('one')").status, 201);
  std::string v1 = nlohmann::json::parse(push(gw, "v", "ngx.say('one')").body)["version"];
  ASSERT_EQ(push(gw, "v", "ngx.say('two')").status, 200);
  EXPECT_EQ(httpGet(gw.port(), "/fn/v").body, "two\n");
  nlohmann::json versions = nlohmann::json::parse(admin(gw.port2(), "GET", "/functions/v/versions").body);
  ASSERT_EQ(versions["versions"].size(), 2u);
  EXPECT_EQ(versions["versions"][1]["version"], v1);
  ASSERT_EQ(admin(gw.port2(), "POST", "/functions/v/rollback").status, 200);
  EXPECT_EQ(httpGet(gw.port(), "/fn/v").body, "one\n");
  ASSERT_EQ(gw.stop(), 0);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/fn/v").body, "one\n");
  EXPECT_EQ(gw.stop(), 0);
}

// A push reaches every worker from its next request (the shared counter
// of pushed modules moves).
TEST(FunctionsTest, EveryWorkerServesTheNewVersion) {
  Gateway gw;
  gw.setSimpleConf("location ~ ^/fn/(\\w+)$ { content_by_function $1; }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken + ";\n", 2);
  ASSERT_TRUE(gw.start());
  for (const std::string& v : {"one", "two"}) {
    ASSERT_LT(push(gw, "f", "ngx.say('" + v + "')").status, 300);
    std::set<std::string> answers;
    for (int i = 0; i < 12; i++) answers.insert(httpGet(gw.port(), "/fn/f").body);
    EXPECT_EQ(answers, std::set<std::string>{v + "\n"});
  }
  EXPECT_TRUE(gw.seriousLogLines().empty());
  EXPECT_EQ(gw.stop(), 0);
}

// Each probe of RELIABILITY.md "Lua" (and a few more) is a function whose
// answer says what it could reach; none may reach anything.
TEST(FunctionsTest, EscapeProbesReachNothing) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  struct Probe {
    std::string name, src, body;  // body "" : the function must fail (500)
  };
  std::vector<Probe> probes = {
      {"os", "ngx.say(type(os.execute), type(os.getenv), type(os.exit), type(os.remove), type(os.time))",
       "nilnilnilnilfunction\n"},
      {"io", "ngx.say(type(io), type(print), type(dofile), type(loadfile))", "nilnilnilnil\n"},
      {"ffi", "local ffi = require 'ffi'", ""},
      {"require_any", "require 'tidegate.sandbox'", ""},
      {"package", "ngx.say(type(package), type(module))", "nilnil\n"},
      {"debug", "ngx.say(type(debug))", "nil\n"},
      {"fenv", "ngx.say(type(getfenv), type(setfenv))", "nilnil\n"},
      {"getfenv0", "getfenv(0)", ""},
      {"load", "ngx.say(type(load), type(loadstring), type(newproxy))", "nilnilnil\n"},
      {"dump", "ngx.say(type(string.dump), type(('').dump), type(('x').rep))", "nilnilfunction\n"},
      {"string_mt", "ngx.say(tostring(getmetatable('')))", "nil\n"},
      {"string_mt_set", "('').upper = function() end", ""},
      {"collectgarbage", "ngx.say(type(collectgarbage), type(gcinfo))", "nilnil\n"},
      {"jit", "ngx.say(type(jit), type(coroutine), type(pcall), type(xpcall))", "nilnilnilnil\n"},
      {"rawset", "rawset(_G, 'x_global', 1)", ""},
      {"shared_unlisted", "ngx.say(type(ngx.shared.secret), type(ngx.shared.d))", "niltable\n"},
      {"ngx_reach", "ngx.say(type(ngx.socket), type(ngx.timer), type(ngx.thread), type(ngx.exec), type(ngx.say))",
       "nilnilnilnilfunction\n"},
      {"header_mt", "ngx.say(tostring(getmetatable(ngx.header)), tostring(getmetatable(ngx.var)))", "nilnil\n"},
      {"var_mt_set", "setmetatable(ngx.var, {})", ""},
      {"var_write", "ngx.var.uri = '/x'", ""},
      {"dict_write", "ngx.shared.d.get = function() return 'pwn' end", ""},
      // Lua patterns run in C, out of the hook's reach: a backtracking
      // bomb is refused (function and method forms); ordinary ones work.
      {"pattern_bomb", "string.find(string.rep('a', 300), string.rep('a-', 6) .. 'b')", ""},
      {"pattern_bomb_method", "(string.rep('a', 300)):gsub(string.rep('a-', 6) .. 'b', '')", ""},
      {"pattern_ok", "ngx.say(('k=v'):match('^(%w+)=(%w+)$'), string.gsub('a b  c', '%s+', '-'))", "ka-b-c2\n"},
  };
  for (const Probe& p : probes) ASSERT_EQ(push(gw, p.name, p.src).status, 201) << p.name;
  for (const Probe& p : probes) {
    Response r = httpGet(gw.port(), "/fn/" + p.name);
    if (p.body.empty()) {
      EXPECT_EQ(r.status, 500) << p.name << ": " << r.body;
      EXPECT_TRUE(gw.waitLog("function \"" + p.name + "\" failed")) << p.name;
    } else {
      EXPECT_EQ(r.status, 200) << p.name;
      EXPECT_EQ(r.body, p.body) << p.name;
    }
  }
  EXPECT_EQ(httpGet(gw.port(), "/trusted").body, kTrustedOk);
  EXPECT_TRUE(gw.seriousLogLinesBut({"function \""}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// What one request changes in string, table, math, ngx, _G or a dict's
// methods is gone for the next request and never reaches trusted code.
TEST(FunctionsTest, OneRequestCannotPoisonTheNext) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(push(gw, "poison",
                 "string.upper = function() return 'pwn' end\n"
                 "table.concat = nil; math.floor = nil; os.time = nil\n"
                 "ngx.req.get_method = function() return 'PWN' end; ngx.re = nil\n"
                 "x_global = 1; _G.y = 2\n"
                 "setmetatable(_G, {__index = function() return 'pwn' end})\n"
                 "ngx.say('done')")
                .status,
            201);
  ASSERT_EQ(push(gw, "check",
                 "ngx.say(string.upper('a'), ('b'):upper(), type(table.concat), type(math.floor), type(os.time),\n"
                 "  ngx.req.get_method(), type(ngx.re), tostring(x_global), tostring(y), tostring(zzz))")
                .status,
            201);
  EXPECT_EQ(httpGet(gw.port(), "/fn/poison").body, "done\n");
  EXPECT_EQ(httpGet(gw.port(), "/fn/check").body, "ABfunctionfunctionfunctionGETtablenilnilnil\n");
  EXPECT_EQ(httpGet(gw.port(), "/trusted").body, kTrustedOk);
  EXPECT_TRUE(gw.seriousLogLines().empty());
  EXPECT_EQ(gw.stop(), 0);
}

// Every budget ends the request with 500 and a log line naming the
// function and the budget; the same worker serves the next request. The
// time budget leaves the instruction budget a wide margin: error_loop
// throws an error per few instructions, slow enough on a busy machine to
// reach 400 ms before 2,000,000 instructions.
TEST(FunctionsTest, BudgetsKillTheRequestNotTheWorker) {
  Gateway gw;
  fnConf(gw,
         "lua_sandbox_instructions 2000000;\nlua_sandbox_timeout 1500ms;\nlua_sandbox_memory 32m;\n"
         "lua_sandbox_pcall on;\n");
  ASSERT_TRUE(gw.start());
  std::string pid = httpGet(gw.port(), "/pid").body;
  struct Kill {
    std::string name, src, budget;
  };
  std::vector<Kill> kills = {
      {"spin", "while true do end", "lua_sandbox_instructions"},
      {"hot", "local x = 0 for i = 1, 1e12 do x = x + i % 7 end ngx.say(x)", "lua_sandbox_instructions"},
      {"pcall_loop", "while true do pcall(function() while true do end end) end", "lua_sandbox_instructions"},
      {"xpcall_loop",
       "while true do xpcall(function() while true do end end, function(e) while true do end end) end",
       "lua_sandbox_instructions"},
      {"error_loop", "local ok repeat ok = pcall(error, 'x') until false", "lua_sandbox_instructions"},
      {"sleeper", "ngx.say('zz') ngx.flush() ngx.sleep(30) ngx.say('woke')", "lua_sandbox_timeout"},
      {"sleep_loop", "while true do ngx.sleep(0.001) end", "lua_sandbox_timeout"},
      {"bomb", "local s = string.rep('x', 2^30) ngx.say(#s)", "lua_sandbox_memory"},
      {"bomb_pcall", "for i = 1, 100 do pcall(string.rep, 'x', 2^29) end ngx.say('survived')", "lua_sandbox_memory"},
      {"bomb_method", "local s = ('x'):rep(2^28) ngx.say(#s)", "lua_sandbox_memory"},
      {"bomb_concat", "local t = {} for i = 1, 40 do t[i] = string.rep('y', 2^20) end ngx.say(#table.concat(t))",
       "lua_sandbox_memory"},
  };
  for (const Kill& k : kills) ASSERT_EQ(push(gw, k.name, k.src).status, 201) << k.name;
  for (const Kill& k : kills) {
    auto t0 = std::chrono::steady_clock::now();
    Response r = httpGet(gw.port(), "/fn/" + k.name);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (k.name == "sleeper") {
      EXPECT_FALSE(r.complete) << k.name;  // the head went out: the response is cut
    } else {
      EXPECT_EQ(r.status, 500) << k.name << ": " << r.body;
    }
    EXPECT_LT(ms, 3000) << k.name;
    EXPECT_TRUE(gw.waitLog("function \"" + k.name + "\" killed: " + k.budget)) << k.name << "\n" << gw.errorLog();
    EXPECT_EQ(httpGet(gw.port(), "/pid").body, pid) << k.name;
  }
  EXPECT_EQ(httpGet(gw.port(), "/trusted").body, kTrustedOk);
  EXPECT_EQ(httpGet(gw.port(), "/pid").body, pid);
  EXPECT_TRUE(gw.seriousLogLinesBut({"function \""}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// The budgets are per location: the same function is fine under the
// defaults and killed where a location sets a tighter one.
TEST(FunctionsTest, BudgetsFollowTheLocation) {
  Gateway gw;
  gw.setSimpleConf("location ~ ^/fn/(\\w+)$ { content_by_function $1; }\n"
                   "location ~ ^/tight/(\\w+)$ { lua_sandbox_instructions 100000; content_by_function $1; }\n"
                   "location ~ ^/short/(\\w+)$ { lua_sandbox_timeout 50ms; content_by_function $1; }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken + ";\n", 1);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(push(gw, "count", "local x = 0 for i = 1, 200000 do x = x + i end ngx.say('done')").status, 201);
  ASSERT_EQ(push(gw, "nap", "ngx.sleep(0.2) ngx.say('rested')").status, 201);
  EXPECT_EQ(httpGet(gw.port(), "/fn/count").body, "done\n");
  EXPECT_EQ(httpGet(gw.port(), "/tight/count").status, 500);
  EXPECT_TRUE(gw.waitLog("function \"count\" killed: lua_sandbox_instructions 100000 exceeded"));
  EXPECT_EQ(httpGet(gw.port(), "/fn/nap").body, "rested\n");
  EXPECT_EQ(httpGet(gw.port(), "/short/nap").status, 500);
  EXPECT_TRUE(gw.waitLog("function \"nap\" killed: lua_sandbox_timeout 50ms exceeded"));
  EXPECT_TRUE(gw.seriousLogLinesBut({"function \""}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// Function source is text: a bytecode chunk is refused at push time.
TEST(FunctionsTest, BytecodeIsRefused) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  Response r = push(gw, "bc", std::string("\x1bLJ\x02\x0a", 5) + "garbage");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("attempt to load chunk with wrong mode"), std::string::npos) << r.body;
  EXPECT_EQ(httpGet(gw.port(), "/fn/bc").status, 404);
  EXPECT_EQ(gw.stop(), 0);
}

// lua_sandbox_shared_dicts and lua_sandbox_modules open what they name,
// through proxies a function cannot change.
TEST(FunctionsTest, WhitelistedDictsAndModulesWork) {
  Gateway gw;
  fnConf(gw, "lua_sandbox_modules mylib;\n");
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mylib", "return {twice = function(x) return 2 * x end}").status, 201);
  ASSERT_EQ(push(gw, "counter",
                 "local d = ngx.shared.d\n"
                 "local n = d:incr('hits', 1, 0)\n"
                 "ngx.say(n, ' ', require('mylib').twice(n))")
                .status,
            201);
  ASSERT_EQ(push(gw, "json",
                 "local t = cjson.decode('{\"a\":[1,2]}')\n"
                 "ngx.say(#t.a, require('cjson.safe').encode({b = true}), type(require('cjson').encode_max_depth))")
                .status,
            201);
  ASSERT_EQ(push(gw, "modwrite", "require('mylib').twice = nil").status, 201);
  ASSERT_EQ(push(gw, "other", "require('resty.core')").status, 201);
  EXPECT_EQ(httpGet(gw.port(), "/fn/counter").body, "1 2\n");
  EXPECT_EQ(httpGet(gw.port(), "/fn/counter").body, "2 4\n");
  EXPECT_EQ(httpGet(gw.port(), "/fn/json").body, "2{\"b\":true}nil\n");
  EXPECT_EQ(httpGet(gw.port(), "/fn/modwrite").status, 500);
  EXPECT_EQ(httpGet(gw.port(), "/fn/other").status, 500);
  EXPECT_EQ(httpGet(gw.port(), "/fn/counter").body, "3 6\n");
  EXPECT_TRUE(gw.waitLog("function \"other\" failed"));
  EXPECT_TRUE(gw.seriousLogLinesBut({"function \"modwrite\" failed", "function \"other\" failed"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(FunctionsTest, RuntimeErrorIs500WithTheFunctionName) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(push(gw, "boom", "local t = nil\nerror('kaboom')").status, 201);
  EXPECT_EQ(httpGet(gw.port(), "/fn/boom").status, 500);
  EXPECT_TRUE(gw.waitLog("function \"boom\" failed: function:boom:2: kaboom"));
  EXPECT_EQ(httpGet(gw.port(), "/trusted").body, kTrustedOk);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(FunctionsTest, AThousandFunctionsPushedAndServed) {
  Gateway gw;
  fnConf(gw);
  ASSERT_TRUE(gw.start());
  constexpr int kCount = 1000;
  {
    RawClient c(gw.port2());
    for (int i = 0; i < kCount; i++) {
      std::string n = std::to_string(i);
      ASSERT_TRUE(c.send(adminRequest("PUT", "/functions/f" + n, "ngx.say('f" + n + "')")));
      ASSERT_EQ(c.readResponse().status, 201) << i;
    }
  }
  RawClient c(gw.port());
  for (int i = 0; i < kCount; i++) {
    std::string n = std::to_string(i);
    ASSERT_TRUE(c.send("GET /fn/f" + n + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = c.readResponse();
    ASSERT_EQ(r.body, "f" + n + "\n") << i;
  }
  EXPECT_EQ(nlohmann::json::parse(admin(gw.port2(), "GET", "/functions").body)["functions"].size(), 1000u);
  EXPECT_TRUE(gw.seriousLogLines().empty());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(FunctionsTest, SandboxDirectivesAreChecked) {
  Gateway bad;
  bad.setSimpleConf("location / { content_by_function f; content_by_lua_block { } }", "lua_sandbox_memory lots;");
  RunResult r = runTidegate({"-t", "-p", bad.prefix().path(), "-c", bad.path("conf/tidegate.conf")});
  EXPECT_NE(r.err.find("invalid value \"lots\" in \"lua_sandbox_memory\" directive"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidegate::test
