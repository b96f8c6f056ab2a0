#include "process/lua_command.h"

#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "core/log.h"
#include "lua/api/common.h"
#include "lua/task.h"
#include "lua/timer.h"
#include "lua/vm.h"

namespace tidegate::process {
namespace {

using core::LogLevel;

struct LuaArgs {
  std::vector<std::string> code;  // -e, in order
  std::vector<std::string> libs;  // -l, in order
  std::vector<std::string> dirs;  // -I, in order (the first is searched first)
  LogLevel level = LogLevel::kWarn;  // --errlog-level; resty's default
  int script = 0;  // argv index of the script ("-": stdin); 0 = none
  bool help = false;
};

void usage(FILE* out) {
  fputs("Usage: tidegate lua [options] [script [args...]]\n\n"
        "Runs Lua code with the ngx API in the context of a timer, as OpenResty's resty does.\n\n"
        "Options:\n"
        "  -e code              : run the code (repeatable; runs before the script)\n"
        "  -l lib               : require the library first and set the global of that name (repeatable)\n"
        "  -I dir               : search dir/?.lua, dir/?/init.lua and dir/?.so first (repeatable)\n"
        "  --errlog-level level : error log level (debug .. emerg; default warn); the log goes to stderr\n"
        "  -h, --help           : this help\n"
        "  --                   : end of options\n\n"
        "The script (\"-\" reads stdin) gets its arguments in arg[1..n] and in \"...\".\n"
        "ngx.say, ngx.print and print write to stdout; ngx.exit(n) exits with status n.\n",
        out);
}

// The value of option `argv[*i]` whose name is `name_len` long: attached
// ("-edo()", "--errlog-level=info") or the next argument.
bool optionValue(int argc, char** argv, int* i, size_t name_len, std::string* out) {
  const char* a = argv[*i];
  if (a[name_len] != '\0') {
    *out = a + name_len + (a[name_len] == '=' && a[1] == '-' ? 1 : 0);
    return true;
  }
  if (*i + 1 >= argc) {
    fprintf(stderr, "tidegate lua: option \"%s\" requires a value\n", a);
    return false;
  }
  *out = argv[++*i];
  return true;
}

bool isDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Options come first; the first other argument is the script, and all that
// follows it belongs to the script (as with resty and lua).
bool parseLuaArgs(int argc, char** argv, LuaArgs* a) {
  std::string v;
  for (int i = 2; i < argc; i++) {
    const char* p = argv[i];
    if (strcmp(p, "--") == 0) {
      if (i + 1 < argc) a->script = i + 1;
      return true;
    }
    if (p[0] != '-' || p[1] == '\0') {
      a->script = i;
      return true;
    }
    if (strcmp(p, "-h") == 0 || strcmp(p, "--help") == 0) {
      a->help = true;
    } else if (strncmp(p, "--errlog-level", 14) == 0 && (p[14] == '\0' || p[14] == '=')) {
      if (!optionValue(argc, argv, &i, 14, &v)) return false;
      if (!core::parseLogLevel(v, &a->level)) {
        fprintf(stderr, "tidegate lua: invalid error log level \"%s\"\n", v.c_str());
        return false;
      }
    } else if (p[1] == 'e' || p[1] == 'l' || p[1] == 'I') {
      if (!optionValue(argc, argv, &i, 2, &v)) return false;
      if (p[1] == 'I' && !isDir(v)) {
        fprintf(stderr, "tidegate lua: search directory \"%s\" is not found\n", v.c_str());
        return false;
      }
      (p[1] == 'e' ? a->code : p[1] == 'l' ? a->libs : a->dirs).push_back(v);
    } else {
      fprintf(stderr, "tidegate lua: invalid option: \"%s\"\n", p);
      return false;
    }
  }
  return true;
}

// Runs the libraries (-l), the -e chunks and the script, in that order, in
// one coroutine, so that each of them may yield (ngx.sleep...).
// Arguments: libs, chunks, script (or nil), script arguments...
const char kDriver[] =
    "local libs, chunks, script = ...\n"
    "for i = 1, #libs do\n"
    "  local name = libs[i]\n"
    "  local mod = require(name)\n"
    "  if not name:find('.', 1, true) then _G[name] = mod end\n"
    "end\n"
    "for i = 1, #chunks do chunks[i]() end\n"
    "if script then return script(select(4, ...)) end\n";

// One run of `tidegate lua`: a private loop, VM and timers, and the code as
// the entry coroutine of a timer-like task.
class LuaRunner {
 public:
  LuaRunner(const LuaArgs& args, int argc, char** argv) : args_(args), argc_(argc), argv_(argv) {}
  LuaRunner(const LuaRunner&) = delete;
  LuaRunner& operator=(const LuaRunner&) = delete;
  // Runs until the code, its light threads and its timers are done.
  int run();

 private:
  class Main;
  bool start(std::string* err);
  conf::ConfigPtr makeConfig() const;
  void installOutput();
  void setArgTable();
  bool pushEntry(int* nargs, std::string* err);
  void mainDone();
  static void onExitTimer(uv_timer_t* t) noexcept;
  void mainFailed(const std::string& trace);
  void tearDown();

  static int say(lua_State* L) { return output(L, true, "say"); }
  static int print(lua_State* L) { return output(L, false, "print"); }
  static int output(lua_State* L, bool newline, const char* fname);
  static int flush(lua_State* L);
  static int eof(lua_State* L);
  static int exitNow(lua_State* L);

  const LuaArgs& args_;
  int argc_;
  char** argv_;
  uv_loop_t loop_;
  uv_timer_t exit_timer_;  // mainDone() -> the graceful exit, one loop turn later
  std::shared_ptr<lua::Vm> vm_;
  std::unique_ptr<lua::Timers> timers_;
  std::unique_ptr<Main> main_;
  // ngx.say's line: a member, not a local, because building it may raise a
  // Lua error, which must not unwind past a C++ object with a destructor.
  std::string line_;
  int status_ = 0;
};

// The entry task; its callbacks hand the outcome back to the runner.
class LuaRunner::Main : public lua::LuaTask {
 public:
  Main(lua::Vm& vm, uv_loop_t* loop, LuaRunner* owner) : LuaTask(vm, loop), owner_(owner) {}
  lua::Phase phase() const override { return lua::Phase::kTimer; }
  void start(int nargs) { startEntry(nargs); }

 private:
  void onDone() override { owner_->mainDone(); }
  void onExit() override { owner_->mainDone(); }  // ngx.exit is os.exit here; other exits end normally
  void onError(std::string trace) override { owner_->mainFailed(trace); }
  LuaRunner* owner_;
};

int LuaRunner::run() {
  std::string err;
  if (!core::ErrorLog::open("stderr", args_.level, &err)) {
    fprintf(stderr, "tidegate lua: %s\n", err.c_str());
    return 1;
  }
  uv_loop_init(&loop_);
  uv_timer_init(&loop_, &exit_timer_);
  exit_timer_.data = this;
  if (start(&err)) {
    uv_run(&loop_, UV_RUN_DEFAULT);
  } else {
    fprintf(stderr, "ERROR: %s\n", err.c_str());
    status_ = 1;
  }
  tearDown();
  return status_;
}

conf::ConfigPtr LuaRunner::makeConfig() const {
  auto cfg = std::make_shared<conf::Config>();
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd)) cfg->prefix = cwd;  // ngx.config.prefix()
  cfg->daemon = false;
  cfg->master_process = false;
  cfg->error_log = "stderr";
  if (!args_.dirs.empty()) {
    std::string& path = cfg->http.lua.package_path;
    std::string& cpath = cfg->http.lua.package_cpath;
    for (const auto& d : args_.dirs) {
      path.append(d).append("/?.lua;").append(d).append("/?/init.lua;");
      cpath.append(d).append("/?.so;");
    }
    path.append(";");  // ";;": then LuaJIT's default path (lua/vm.cc)
    cpath.append(";");
  }
  return cfg;
}

bool LuaRunner::start(std::string* err) {
  vm_ = lua::Vm::create(makeConfig(), err);
  if (!vm_) return false;
  vm_->setWorkerId(0);
  timers_ = std::make_unique<lua::Timers>(*vm_, &loop_);
  vm_->setTimers(timers_.get());
  installOutput();
  setArgTable();
  int nargs = 0;
  if (!pushEntry(&nargs, err)) return false;
  main_ = std::make_unique<Main>(*vm_, &loop_, this);
  main_->start(nargs);  // runs until the code first waits; may end at once
  return true;
}

// The loop ran dry (or never started): ends what is left and closes it.
void LuaRunner::tearDown() {
  main_.reset();
  if (vm_) vm_->setTimers(nullptr);
  timers_.reset();
  lua::closeSocketPool();
  uv_close(reinterpret_cast<uv_handle_t*>(&exit_timer_), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);  // the close callbacks of the handles just closed
  uv_loop_close(&loop_);
  vm_.reset();
  fflush(stdout);
}

// Output as resty has it: the VM is private to this process, so the ngx
// table's response functions are replaced by stdout writers, `print` is
// ngx.say, and ngx.exit ends the process at once (exitNow).
void LuaRunner::installOutput() {
  lua_State* L = vm_->state();
  struct Field {
    const char* name;
    lua_CFunction fn;
  };
  static constexpr Field kFields[] = {{"say", say}, {"print", print}, {"flush", flush}, {"eof", eof}};
  // Stack: [] -> [ngx] -> []
  lua_getglobal(L, "ngx");
  for (const Field& f : kFields) {
    lua_pushstring(L, f.name);
    lua_pushlightuserdata(L, this);
    lua_pushcclosure(L, f.fn, 1);
    lua_rawset(L, -3);
  }
  lua_pushliteral(L, "say");
  lua_rawget(L, -2);
  lua_setglobal(L, "print");
  lua_pushliteral(L, "exit");
  lua_pushlightuserdata(L, this);
  lua_pushcclosure(L, exitNow, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

// ngx.exit(n): as resty's os.exit, the process ends with status n at once
// (no pending timer fires), but through tearDown(), so the VM is closed
// cleanly: the calling coroutine's task ends, and the loop stops.
int LuaRunner::exitNow(lua_State* L) {
  auto* self = static_cast<LuaRunner*>(lua_touserdata(L, lua_upvalueindex(1)));
  self->status_ = static_cast<int>(luaL_optinteger(L, 1, 0));
  uv_stop(&self->loop_);
  lua::LuaTask* task = lua::LuaTask::current(L);
  if (!task || !task->running() || task->running()->L != L) {
    fflush(stdout);
    exit(self->status_);  // not from a coroutine of ours (a C library's callback): plain os.exit
  }
  task->requestExit();
  return lua_yield(L, 0);
}

// What the output functions return, as OpenResty's: 1, or nil and the
// error (errno's text). Stack: [...] -> [..., 1] or [..., nil, err].
int result(lua_State* L, bool ok) {
  if (!ok) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}

// ngx.say / ngx.print. Stack: [args...] -> [args..., 1] or [..., nil, err].
int LuaRunner::output(lua_State* L, bool newline, const char* fname) {
  auto* self = static_cast<LuaRunner*>(lua_touserdata(L, lua_upvalueindex(1)));
  std::string& line = self->line_;
  line.clear();
  int top = lua_gettop(L);
  for (int i = 1; i <= top; i++) lua::appendValue(L, i, &line, fname);
  if (newline) line.push_back('\n');
  return result(L, fwrite(line.data(), 1, line.size(), stdout) == line.size());
}

// ngx.flush(wait?): stdout is written through at once.
int LuaRunner::flush(lua_State* L) { return result(L, fflush(stdout) == 0); }

// ngx.eof(): stdout stays open (other code may still write to it), as in resty.
int LuaRunner::eof(lua_State* L) { return result(L, true); }

// `arg` as the standalone interpreters set it: arg[0] is the script,
// arg[1..n] its arguments, and what came before it (the binary, "lua",
// the options) has negative indices. Without a script, everything is
// negative.
void LuaRunner::setArgTable() {
  lua_State* L = vm_->state();
  int zero = args_.script ? args_.script : argc_;
  // Stack: [] -> [arg] -> []
  lua_createtable(L, argc_ - zero, zero + 1);
  for (int i = 0; i < argc_; i++) {
    lua_pushstring(L, argv_[i]);
    lua_rawseti(L, -2, i - zero);
  }
  lua_setglobal(L, "arg");
}

// Stack: [] -> [driver, libs, chunks, script or nil, script args...], with
// *nargs the count after the driver; [] with *err on a syntax error.
bool LuaRunner::pushEntry(int* nargs, std::string* err) {
  lua_State* L = vm_->state();
  int base = lua_gettop(L);
  int nscript_args = args_.script ? argc_ - args_.script - 1 : 0;
  lua_checkstack(L, nscript_args + 8);
  auto failed = [&] {
    *err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot load the code";
    lua_settop(L, base);
    return false;
  };
  if (luaL_loadbuffer(L, kDriver, sizeof kDriver - 1, "=(tidegate lua)") != 0) return failed();
  lua_createtable(L, static_cast<int>(args_.libs.size()), 0);
  for (size_t i = 0; i < args_.libs.size(); i++) {
    lua_pushstring(L, args_.libs[i].c_str());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  lua_createtable(L, static_cast<int>(args_.code.size()), 0);
  for (size_t i = 0; i < args_.code.size(); i++) {
    const std::string& code = args_.code[i];
    if (luaL_loadbuffer(L, code.data(), code.size(), "=(command line -e)") != 0) return failed();
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  if (args_.script) {
    const char* path = argv_[args_.script];
    if (luaL_loadfile(L, strcmp(path, "-") == 0 ? nullptr : path) != 0) return failed();
  } else {
    lua_pushnil(L);
  }
  for (int i = args_.script + 1; args_.script && i < argc_; i++) lua_pushstring(L, argv_[i]);
  *nargs = lua_gettop(L) - base - 1;
  return true;
}

// The code and its light threads ended. As resty, which then asks nginx for
// a graceful exit: timers already due (ngx.timer.at(0, ...)) still run
// normally on this loop turn, then the pending ones fire with premature =
// true, running ones run to their end, and the loop runs dry.
void LuaRunner::mainDone() { uv_timer_start(&exit_timer_, onExitTimer, 0, 0); }

void LuaRunner::onExitTimer(uv_timer_t* t) noexcept {
  auto* self = static_cast<LuaRunner*>(t->data);
  self->vm_->setExiting();
  self->timers_->shutdown(nullptr);
}

// As resty: the error and its traceback, then exit 1 at once; pending
// timers never fire and running ones are ended. (Called from the entry
// task's run(), never from a timer's, so ending timers here is safe.)
void LuaRunner::mainFailed(const std::string& trace) {
  fflush(stdout);
  fprintf(stderr, "ERROR: %s\n", trace.c_str());
  status_ = 1;
  timers_->abortAll();
}

}  // namespace

int runLuaCommand(int argc, char** argv) {
  LuaArgs args;
  if (!parseLuaArgs(argc, argv, &args)) {
    usage(stderr);
    return 1;
  }
  if (args.help) {
    usage(stdout);
    return 0;
  }
  if (args.code.empty() && !args.script) {
    fprintf(stderr, "tidegate lua: neither a script nor -e code given\n");
    usage(stderr);
    return 1;
  }
  LuaRunner runner(args, argc, argv);
  return runner.run();
}

}  // namespace tidegate::process
