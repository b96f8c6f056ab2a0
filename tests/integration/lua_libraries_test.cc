// Debian's OpenResty libraries, unmodified, inside tidegate (docs/libraries.md):
// lua-nginx-redis and lua-nginx-memcached against a real redis-server and
// memcached, lua-resty-lrucache, lua-cjson, lua-nginx-string (OpenSSL and
// ngx_hex_dump / ngx_atoi through ffi.C) and lua-nginx-cookie. Each runs
// from a content handler and from an ngx.timer.at callback, loaded from
// /usr/share/lua/5.1 through LuaJIT's default package.path (";;").
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "harness.h"

namespace tidegate::test {
namespace {

// The executable `name` on PATH, or "".
std::string findOnPath(const std::string& name) {
  const char* path = getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// A server (redis-server, memcached) run as a child process on a free
// loopback port, with a temp dir as its working directory and its output in
// that dir. "{PORT}" in `args` is replaced. The destructor stops it with
// `stop_signal` (SIGKILL after 5 s) and reaps it.
class ChildServer {
 public:
  ChildServer(const std::string& name, std::vector<std::string> args, int stop_signal = SIGTERM)
      : port_(freePort()), stop_signal_(stop_signal) {
    binary_ = findOnPath(name);
    if (binary_.empty()) return;
    for (auto& a : args) {
      if (a == "{PORT}") a = std::to_string(port_);
    }
    args.insert(args.begin(), binary_);
    // Everything the child needs is built before fork: it only makes system calls.
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string log = dir_.path() + "/server.log";
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      if (chdir(dir_.path().c_str()) != 0) _exit(126);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~ChildServer() {
    if (pid_ <= 0) return;
    kill(pid_, stop_signal_);
    if (!waitFor([this] { return reaped(); }, Ms(5000))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  ChildServer(const ChildServer&) = delete;
  ChildServer& operator=(const ChildServer&) = delete;

  // Waits until the port accepts connections; a message saying why not, or "".
  std::string waitReady() {
    if (binary_.empty()) return "not on PATH (scripts/setup.sh installs it)";
    bool up = waitFor([this] { return reaped() || connectErrno(port_) == 0; });
    if (up && !reaped_) return "";
    return (reaped_ ? "exited at start: " : "not listening after 10 s: ") + dir_.read("server.log");
  }
  int port() const { return port_; }

 private:
  bool reaped() {
    if (!reaped_ && waitpid(pid_, nullptr, WNOHANG) == pid_) reaped_ = true;
    return reaped_;
  }

  TempDir dir_;
  std::string binary_;
  int port_;
  int stop_signal_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

std::unique_ptr<ChildServer> startRedis() {
  return std::make_unique<ChildServer>(
      "redis-server", std::vector<std::string>{"--port", "{PORT}", "--bind", "127.0.0.1", "--save", "",
                                               "--appendonly", "no", "--dir", "."});
}

std::unique_ptr<ChildServer> startMemcached() {
  std::vector<std::string> args{"-l", "127.0.0.1", "-p", "{PORT}", "-U", "0"};
  // memcached refuses to run as root unless told which user to be.
  if (getuid() == 0) args.insert(args.end(), {"-u", "root"});
  // SIGKILL: it keeps nothing, and its graceful exit on SIGTERM waited for a
  // clock tick here (0.9 s per test).
  return std::make_unique<ChildServer>("memcached", args, SIGKILL);
}

// Lua put in front of every cases module (after `local SERVER_PORT = N`):
// show(...) is its arguments as text, space-separated (ngx.null as "null");
// out = collect() gathers lines: out(...) adds one, out() returns them joined
// by "\n"; connect(lib) is a client of nginx.redis or nginx.memcached,
// connected to the test's server; reuse_case(lib, command) is a case that
// connects, runs `command`, puts the connection back in the pool and returns
// what get_reused_times() said.
const char* kPrelude = R"(
local cases = {}
local function connect(lib)
    local client = lib:new()
    client:set_timeout(2000)
    assert(client:connect("127.0.0.1", SERVER_PORT))
    return client
end
local function reuse_case(lib, command)
    return function()
        local client = connect(lib)
        local n = client:get_reused_times()
        assert(client[command](client))
        assert(client:set_keepalive(10000, 10))
        return tostring(n)
    end
end
local function show(...)
    local t = {}
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        t[i] = v == ngx.null and "null" or tostring(v)
    end
    return table.concat(t, " ")
end
local function collect()
    local lines = {}
    return function(...)
        if select("#", ...) == 0 then return table.concat(lines, "\n") end
        lines[#lines + 1] = show(...)
    end
end
)";

// /content?case=NAME answers cases[NAME](); /timer?case=NAME runs it in a
// timer that stores its result (or "error: ...") in the shared dict, which
// /result?case=NAME reads.
const char* kServer = R"(
    location /content { content_by_lua_block { ngx.say(require("cases")[ngx.var.arg_case]()) } }
    location /timer {
        content_by_lua_block {
            local name = ngx.var.arg_case
            local f = require("cases")[name]
            ngx.say(ngx.timer.at(0, function()
                local ok, res = pcall(f)
                ngx.shared.results:set(name, ok and res or "error: " .. tostring(res))
            end))
        }
    }
    location /result { content_by_lua_block { ngx.say(ngx.shared.results:get(ngx.var.arg_case)) } }
)";

// One tidegate (1 worker) serving a cases module: `lua` defines
// cases.NAME functions, each returning a string.
class CasesTest : public ::testing::Test {
 protected:
  void startCases(const std::string& lua, int server_port = 0) {
    gw_.prefix().write("lua/cases.lua", "local SERVER_PORT = " + std::to_string(server_port) + "\n" + kPrelude + lua +
                                            "\nreturn cases\n");
    gw_.setSimpleConf(kServer, "lua_package_path \"{PREFIX}/lua/?.lua;;\";\n  lua_shared_dict results 1m;", 1);
    ASSERT_TRUE(gw_.start()) << gw_.errorLog() << gw_.stderrText();
  }
  std::string content(const std::string& name) { return httpGet(gw_.port(), "/content?case=" + name).body; }
  // Runs the case in a timer and waits for its result.
  std::string fromTimer(const std::string& name) {
    EXPECT_EQ(httpGet(gw_.port(), "/timer?case=" + name).body, "1\n");
    std::string body = "nil\n";
    waitFor([&] {
      body = httpGet(gw_.port(), "/result?case=" + name).body;
      return body != "nil\n";
    });
    return body;
  }
  void TearDown() override {
    if (gw_.masterPid() <= 0) return;  // SetUp failed before starting it
    EXPECT_EQ(gw_.stop(), 0);
    EXPECT_TRUE(gw_.seriousLogLines().empty()) << gw_.errorLog();
  }

  Gateway gw_;
};

// ---- lua-nginx-redis ---------------------------------------------------------------------

const char* kRedisCases = R"(
local redis = require "nginx.redis"
function cases.main()
    local red, out = connect(redis), collect()
    out("select", red:select(1))
    out("flushdb", red:flushdb())
    out("set", red:set("dog", "an animal"))
    out("get", red:get("dog"))
    out("missing", red:get("no such key"))
    out("incr", red:incr("n"))
    out("incr", red:incr("n"))
    out("wrongtype", red:hget("dog", "field"))
    out("hmset", red:hmset("h", "a", "1", "b", "2"))
    local all = red:hgetall("h")
    out("hgetall", table.concat(all, ","), red:array_to_hash(all).b)
    red:init_pipeline()
    red:set("p", "x")
    red:get("p")
    red:incr("p")
    red:get("no such key")
    local res = red:commit_pipeline()
    out("pipeline", #res, res[1], res[2], res[3][1], res[3][2], res[4])
    out("select", red:select(0))
    out("db0", red:get("dog"))
    out("keepalive", red:set_keepalive(10000, 10))
    return out()
end
cases.reuse = reuse_case(redis, "ping")
)";

const char* kRedisMain =
    "select OK\n"
    "flushdb OK\n"
    "set OK\n"
    "get an animal\n"
    "missing null\n"
    "incr 1\n"
    "incr 2\n"
    "wrongtype false WRONGTYPE Operation against a key holding the wrong kind of value\n"
    "hmset OK\n"
    "hgetall a,1,b,2 2\n"
    "pipeline 4 OK x false ERR value is not an integer or out of range null\n"
    "select OK\n"
    "db0 null\n"
    "keepalive 1\n";

// ---- lua-nginx-memcached -----------------------------------------------------------------

const char* kMemcachedCases = R"(
local memcached = require "nginx.memcached"
function cases.store()
    local memc, out = connect(memcached), collect()
    out("flush_all", memc:flush_all())
    out("set", memc:set("dog", 32))
    out("add", memc:add("dog", "x"))
    out("add", memc:add("cat", "meow", 0, 7))
    out("incr", memc:incr("dog", 10))
    out("incr", memc:incr("cat", 1))
    out("delete", memc:delete("cat"))
    out("delete", memc:delete("cat"))
    out("flush_all", memc:flush_all())
    out("incr", memc:incr("dog", 1))
    out("keepalive", memc:set_keepalive(10000, 10))
    return out()
end
function cases.get()
    local memc, out = connect(memcached), collect()
    out("flush_all", memc:flush_all())
    out("set", memc:set("dog", 32))
    out("get", memc:get("dog"))
    out("add", memc:add("cat", "meow", 0, 7))
    out("get", memc:get("cat"))
    out("set", memc:set("a b", "spaced"))
    local multi = memc:get({"dog", "a b", "none"})
    out("multi", multi.dog[1], multi["a b"][1], multi["a b"][2], multi.none)
    out("delete", memc:delete("cat"))
    out("get", memc:get("cat"))
    out("keepalive", memc:set_keepalive(10000, 10))
    return out()
end
cases.reuse = reuse_case(memcached, "version")
)";

const char* kMemcachedStore =
    "flush_all 1\n"
    "set 1\n"
    "add nil NOT_STORED\n"
    "add 1\n"
    "incr 42\n"
    "incr nil CLIENT_ERROR cannot increment or decrement non-numeric value\n"
    "delete 1\n"
    "delete nil NOT_FOUND\n"
    "flush_all 1\n"
    "incr nil NOT_FOUND\n"
    "keepalive 1\n";

const char* kMemcachedGet =
    "flush_all 1\n"
    "set 1\n"
    "get 32 0\n"
    "add 1\n"
    "get meow 7\n"
    "set 1\n"
    "multi 32 spaced 0 nil\n"
    "delete 1\n"
    "get nil nil nil\n"
    "keepalive 1\n";

// ---- lua-resty-lrucache ------------------------------------------------------------------

// Both implementations; `hits` is a module-level cache, so it lives as long
// as the worker: requests and timers of one worker share it.
const char* kLruCases = R"(
local lrucache = require "resty.lrucache"
local pureffi = require "resty.lrucache.pureffi"
local hits = lrucache.new(4)
local function exercise(impl)
    local out = collect()
    local c = assert(impl.new(2))
    c:set("a", 1)
    c:set("b", 2)
    out("get", c:get("a"))
    c:set("c", 3)   -- evicts "b", the least recently used
    out("after eviction", c:get("a"), c:get("b"), c:get("c"))
    out("count", c:count(), c:capacity())
    c:set("t", "short", 0.05, 9)
    out("fresh", c:get("t"))
    ngx.sleep(0.1)
    out("expired", c:get("t"))
    c:delete("t")
    out("deleted", c:get("t"))
    c:flush_all()
    out("flushed", c:get("a"), c:count())
    return out()
end
function cases.lrucache() return exercise(lrucache) end
function cases.pureffi() return exercise(pureffi) end
function cases.hits()
    hits:set("n", (hits:get("n") or 0) + 1)
    return tostring(hits:get("n"))
end
)";

const char* kLruMain =
    "get 1 nil 0\n"
    "after eviction 1 nil 3 nil 0\n"
    "count 2 2\n"
    "fresh short nil 9\n"
    "expired nil short 9\n"
    "deleted nil\n"
    "flushed nil 0\n";

class LruCacheTest : public CasesTest {
 protected:
  void SetUp() override { startCases(kLruCases); }
};

TEST_F(LruCacheTest, AModuleLevelCacheLivesAcrossRequestsAndTimers) {
  EXPECT_EQ(content("hits"), "1\n");
  EXPECT_EQ(content("hits"), "2\n");
  EXPECT_EQ(fromTimer("hits"), "3\n");
}

// ---- lua-cjson ---------------------------------------------------------------------------

// Debian's lua-cjson is upstream 2.1.0, not OpenResty's fork: no
// encode_empty_table_as_object, empty_array or array_mt; an empty table
// encodes as an object, as the fork's default does.
const char* kCjsonCases = R"(
local cjson = require "cjson"
local safe = require "cjson.safe"
function cases.main()
    local out = collect()
    local v = cjson.decode('{"a":[1,2,{"b":null}],"s":"caf\\u00e9","t":true,"n":-1.5e3}')
    out("decode", #v.a, v.a[3].b == cjson.null, v.s, v.t, v.n)
    out("encode", cjson.encode({1, "two", cjson.null, false}))
    out("object", cjson.encode({key = {nested = "x\"y/z"}}))
    out("round trip", cjson.encode(cjson.decode('[{"k":[true,null,0.25]}]')))
    out("empty", cjson.encode({}), cjson.encode_empty_table_as_object, cjson.empty_array)
    out("null", cjson.encode(cjson.null), cjson.null == ngx.null)
    out("safe", safe.decode("{bad"))
    out("safe", safe.encode(function() end))
    out("raises", pcall(cjson.decode, "[1,"))
    return out()
end
)";

const char* kCjsonMain =
    "decode 3 true caf\xc3\xa9 true -1500\n"
    "encode [1,\"two\",null,false]\n"
    "object {\"key\":{\"nested\":\"x\\\"y\\/z\"}}\n"
    "round trip [{\"k\":[true,null,0.25]}]\n"
    "empty {} nil nil\n"
    "null null true\n"
    "safe nil Expected object key string but found invalid token at character 2\n"
    "safe nil Cannot serialise function: type not supported\n"
    "raises false Expected value but found T_END at character 4\n";

// ---- lua-nginx-string --------------------------------------------------------------------

// Digests of "" and "abc" and the AES ciphertexts are `openssl dgst` /
// `openssl enc -aes-256-cbc` output for the same inputs:
//   printf 'hello tidegate' | openssl enc -aes-256-cbc -md md5 -S 3132333435363738 -pass pass:secret
//   printf 'hello tidegate' | openssl enc -aes-256-cbc -K <hex of key> -iv <hex of iv>
const char* kStringCases = R"(
local str = require "nginx.string"
local to_hex = str.to_hex
local function digest(name, s)
    local h = require("nginx." .. name):new()
    h:update(s)
    return to_hex(h:final())
end
function cases.main()
    local out = collect()
    for _, name in ipairs({"md5", "sha1", "sha256", "sha512"}) do
        out(name, digest(name, ""), digest(name, "abc"))
    end
    local h = require("nginx.md5"):new()
    h:update("a")
    h:update("bc")
    out("md5 in two updates", to_hex(h:final()))
    out("to_hex", to_hex("\0\1\127\128\255AZ"), "[" .. to_hex("") .. "]")
    out("atoi", str.atoi("0"), str.atoi("12345"), str.atoi("9223372036854775807"))
    out("atoi bad", str.atoi(""), str.atoi("-1"), str.atoi("12a"), str.atoi(" 1"), str.atoi("9223372036854775808"))
    local random = require "nginx.random"
    local r1, r2 = random.bytes(16), random.bytes(16, true)
    out("random", #r1, #r2, #random.bytes(1000), r1 ~= random.bytes(16))
    local aes = require "nginx.aes"
    local a = aes:new("secret", "12345678", aes.cipher(256, "cbc"), aes.hash.md5)
    local enc = a:encrypt("hello tidegate")
    out("aes bytestokey", to_hex(enc), a:decrypt(enc))
    local k = aes:new("0123456789abcdef0123456789abcdef", nil, aes.cipher(256, "cbc"), {iv = "1234567890abcdef"})
    enc = k:encrypt("hello tidegate")
    out("aes key iv", to_hex(enc), k:decrypt(enc))
    local long = string.rep("0123456789", 100)
    out("aes round trip", #k:encrypt(long), k:decrypt(k:encrypt(long)) == long)
    return out()
end
)";

const char* kStringMain =
    "md5 d41d8cd98f00b204e9800998ecf8427e 900150983cd24fb0d6963f7d28e17f72\n"
    "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 a9993e364706816aba3e25717850c26c9cd0d89d\n"
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 "
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    "sha512 cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e "
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f\n"
    "md5 in two updates 900150983cd24fb0d6963f7d28e17f72\n"
    "to_hex 00017f80ff415a []\n"
    "atoi 0 12345 9.2233720368548e+18\n"
    "atoi bad -1 -1 -1 -1 -1\n"
    "random 16 16 1000 true\n"
    "aes bytestokey 10deda7798aa72a58e9b4e0b33c171ad hello tidegate\n"
    "aes key iv d8b149ae35a9b0b7c5d577edf1a573d3 hello tidegate\n"
    "aes round trip 1008 true\n";

// ---- lua-nginx-cookie --------------------------------------------------------------------

// A timer has no request: ngx.var and ngx.header raise, as in OpenResty, so
// cookie:new() does too.
const char* kCookieCases = R"(
local ck = require "nginx.cookie"
function cases.main()
    local out = collect()
    local cookie = assert(ck:new())
    out("get", cookie:get("lang"), cookie:get("session"), cookie:get("absent"))
    local all = cookie:get_all()
    local keys = {}
    for k, v in pairs(all) do keys[#keys + 1] = k .. "=" .. v end
    table.sort(keys)
    out("all", table.concat(keys, " "))
    out("set", cookie:set({key = "Name", value = "Bob", path = "/", domain = "example.com", secure = true,
                           httponly = true, expires = "Wed, 09 Jun 2021 10:18:14 GMT", max_age = 50,
                           extension = "SameSite=Strict"}))
    out("set", cookie:set({key = "theme", value = "dark"}))
    out("set again", cookie:set({key = "theme", value = "dark"}))
    out("set bad", cookie:set({key = "novalue"}))
    return out()
end
function cases.none()
    local cookie = assert(ck:new())
    return show(cookie:get("lang")) .. " | " .. show(cookie:get_all())
end
)";

class CookieTest : public CasesTest {
 protected:
  void SetUp() override { startCases(kCookieCases); }
  Response request(const std::string& name, const std::string& headers) {
    RawClient c(gw_.port());
    c.send("GET /content?case=" + name + " HTTP/1.1\r\nHost: x\r\n" + headers + "Connection: close\r\n\r\n");
    return c.readResponse();
  }
};

TEST_F(CookieTest, GetGetAllAndSetFromAContentHandler) {
  Response r = request("main", "Cookie: lang=en-US; session=abc=123;empty=; \tlast=1\r\n");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body,
            "get en-US abc=123 nil\n"
            "all empty= lang=en-US last=1 session=abc=123\n"
            "set true\n"
            "set true\n"
            "set again true\n"
            "set bad nil missing cookie field \"key\" or \"value\"\n");
  std::vector<std::string> set_cookies;
  for (const auto& [name, value] : r.headers) {
    if (name == "set-cookie") set_cookies.push_back(value);
  }
  EXPECT_EQ(set_cookies, (std::vector<std::string>{
                             "Name=Bob; Expires=Wed, 09 Jun 2021 10:18:14 GMT; Max-Age=50; Domain=example.com; "
                             "Path=/; Secure; HttpOnly; SameSite=Strict",
                             "theme=dark"}));
}

TEST_F(CookieTest, NoCookieHeader) {
  EXPECT_EQ(request("none", "").body,
            "nil no cookie found in the current request | nil no cookie found in the current request\n");
}

TEST_F(CookieTest, ATimerHasNoRequestToReadCookiesFrom) {
  std::string result = fromTimer("main");
  EXPECT_EQ(result.rfind("error: ", 0), 0u) << result;
  EXPECT_NE(result.find("API disabled in the context of ngx.timer"), std::string::npos) << result;
}

// ---- every library: its main case from a content handler and from a timer ---------------

struct Library {
  std::string name;                            // the instance's name in the test list
  std::unique_ptr<ChildServer> (*server)();    // the server it talks to, or nullptr
  const char* cases;                           // SERVER_PORT in them is the server's port
  const char* main_case;
  const char* expected;                        // what cases[main_case]() returns
};

void PrintTo(const Library& library, std::ostream* os) { *os << library.name; }

class LibraryTest : public CasesTest, public ::testing::WithParamInterface<Library> {
 protected:
  void SetUp() override {
    if (GetParam().server) {
      server_ = GetParam().server();
      ASSERT_EQ(server_->waitReady(), "") << GetParam().name;
    }
    startCases(GetParam().cases, server_ ? server_->port() : 0);
  }
  std::unique_ptr<ChildServer> server_;
};

TEST_P(LibraryTest, FromAContentHandler) { EXPECT_EQ(content(GetParam().main_case), GetParam().expected); }

TEST_P(LibraryTest, FromATimer) { EXPECT_EQ(fromTimer(GetParam().main_case), GetParam().expected); }

std::string libraryName(const ::testing::TestParamInfo<Library>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Debian, LibraryTest,
                         ::testing::Values(Library{"Redis", startRedis, kRedisCases, "main", kRedisMain},
                                           Library{"MemcachedStorage", startMemcached, kMemcachedCases, "store",
                                                   kMemcachedStore},
                                           Library{"LruCache", nullptr, kLruCases, "lrucache", kLruMain},
                                           Library{"LruCachePureFfi", nullptr, kLruCases, "pureffi", kLruMain},
                                           Library{"Cjson", nullptr, kCjsonCases, "main", kCjsonMain},
                                           Library{"String", nullptr, kStringCases, "main", kStringMain},
                                           Library{"MemcachedGet", startMemcached, kMemcachedCases, "get",
                                                   kMemcachedGet}),
                         libraryName);

// set_keepalive, then the next request (and a timer) of the same worker gets
// the connection from the pool: cases.reuse returns get_reused_times().
using KeepaliveTest = LibraryTest;

TEST_P(KeepaliveTest, TheNextRequestAndATimerReuseTheConnection) {
  EXPECT_EQ(content("reuse"), "0\n");
  EXPECT_EQ(content("reuse"), "1\n");
  EXPECT_EQ(fromTimer("reuse"), "2\n");
}

INSTANTIATE_TEST_SUITE_P(Debian, KeepaliveTest,
                         ::testing::Values(Library{"Redis", startRedis, kRedisCases, "reuse", nullptr},
                                           Library{"Memcached", startMemcached, kMemcachedCases, "reuse", nullptr}),
                         libraryName);

}  // namespace
}  // namespace tidegate::test
