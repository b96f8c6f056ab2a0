// `tidegate lua`: Lua with the ngx API from the command line, as OpenResty's
// `resty` runs it (timer context, stdout for ngx.say, stderr for the log).
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "harness.h"

namespace tidegate::test {
namespace {

RunResult lua(std::vector<std::string> args) {
  args.insert(args.begin(), "lua");
  return runTidegate(args);
}

// Runs `tidegate lua args...`; expects status 0, exactly `out` on stdout and
// nothing on stderr.
void expectOutput(std::vector<std::string> args, const std::string& out) {
  RunResult r = lua(std::move(args));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, out);
  EXPECT_EQ(r.err, "");
}

TEST(LuaCommandTest, SayWritesToStdout) {
  expectOutput({"-e", "ngx.say('hi')"}, "hi\n");
}

TEST(LuaCommandTest, PrintFlattensTablesAndPrintIsSay) {
  expectOutput({"-e",
                "ngx.print({'a', {'b', 1}}, true, nil, ngx.null) ngx.say() "
                "print('p', 2) ngx.flush(true) ngx.say(ngx.eof())"},
               "ab1truenilnull\np2\n1\n");
}

TEST(LuaCommandTest, ScriptGetsArgTableAndVarargs) {
  TempDir dir;
  dir.write("s.lua",
            "#!/usr/bin/env tidegate-lua\n"
            "ngx.say(arg[0], '|', arg[1], '|', arg[2], '|', arg[-3], '|', select('#', ...), '|', ...)\n");
  std::string script = dir.path() + "/s.lua";
  expectOutput({"-e", "ngx.say('first ', arg[1])", script, "a", "b c"},
               "first a\n" + script + "|a|b c|lua|2|ab c\n");
}

TEST(LuaCommandTest, SleepAndLightThreadsInterleave) {
  expectOutput({"-e",
                "local t = ngx.thread.spawn(function()\n"
                "  ngx.say('thread start') ngx.sleep(0.05) ngx.say('thread end') return 'r'\n"
                "end)\n"
                "ngx.say('main before sleep')\n"
                "ngx.sleep(0.01)\n"
                "ngx.say('main after sleep')\n"
                "local ok, res = ngx.thread.wait(t)\n"
                "ngx.say('waited ', ok, ' ', res)\n"
                "ngx.thread.spawn(function() ngx.sleep(0.02) ngx.say('unwaited thread') end)\n"
                "ngx.say('main end')\n"},
               "thread start\nmain before sleep\nmain after sleep\nthread end\nwaited true r\n"
               "main end\nunwaited thread\n");
}

TEST(LuaCommandTest, TimerCallbackRunsBeforeExit) {
  expectOutput({"-e",
                "ngx.timer.at(0.01, function(premature, x) ngx.say('timer ', premature, ' ', x) end, 'arg')\n"
                "ngx.sleep(0.05) ngx.say('main done')"},
               "timer false arg\nmain done\n");
}

TEST(LuaCommandTest, PendingTimersFirePrematurelyAtExit) {
  auto start = std::chrono::steady_clock::now();
  expectOutput({"-e",
                "ngx.timer.at(30, function(p) ngx.sleep(0.01) ngx.say('late ', p, ' ', ngx.worker.exiting()) end)\n"
                "ngx.timer.at(0, function(p) ngx.say('zero ', p) end)\n"
                "ngx.say('main')"},
               "main\nzero false\nlate true true\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(LuaCommandTest, LogGoesToStderrAtWarnByDefault) {
  RunResult r = lua({"-e", "ngx.log(ngx.ERR, 'oops') ngx.log(ngx.INFO, 'quiet') ngx.say('out')"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_NE(r.err.find("[error]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[lua] (command line -e):1: oops"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("quiet"), std::string::npos) << r.err;

  RunResult info = lua({"--errlog-level", "info", "-e", "ngx.log(ngx.INFO, 'now shown')"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(info.out, "");
  EXPECT_NE(info.err.find("[info]"), std::string::npos) << info.err;
  EXPECT_NE(info.err.find("now shown"), std::string::npos) << info.err;
}

TEST(LuaCommandTest, RuntimeErrorExitsOneWithTraceback) {
  RunResult r = lua({"-e",
                     "ngx.timer.at(0, function() ngx.say('timer ran') end)\n"
                     "ngx.say('before')\n"
                     "local function f() error('boom') end\n"
                     "f()\n"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "before\n");  // the error ends everything: the timer never fires
  EXPECT_EQ(r.err.rfind("ERROR: (command line -e):3: boom\nstack traceback:\n", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("in function 'f'"), std::string::npos) << r.err;

  RunResult syntax = lua({"-e", "ngx.say("});
  EXPECT_EQ(syntax.exit_code, 1);
  EXPECT_EQ(syntax.out, "");
  EXPECT_NE(syntax.err.find("ERROR: (command line -e):1:"), std::string::npos) << syntax.err;

  RunResult missing = lua({"/nonexistent/script.lua"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("cannot open /nonexistent/script.lua"), std::string::npos) << missing.err;
}

TEST(LuaCommandTest, NgxExitEndsTheProcessWithItsStatus) {
  RunResult r = lua({"-e", "ngx.say('a') ngx.exit(3) ngx.say('b')"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_EQ(r.out, "a\n");

  RunResult from_timer = lua({"-e",
                              "ngx.timer.at(0, function() ngx.say('t') ngx.exit(5) end)\n"
                              "ngx.sleep(5) ngx.say('not reached')"});
  EXPECT_EQ(from_timer.exit_code, 5) << from_timer.err;
  EXPECT_EQ(from_timer.out, "t\n");
}

TEST(LuaCommandTest, IncludeDirAndRequiredLibrary) {
  TempDir dir;
  dir.write("lib/mylib.lua", "ngx.say('loading mylib') return { hello = function() return 'hello' end }\n");
  dir.write("lib/pkg/init.lua", "return { v = 42 }\n");
  expectOutput({"-I", dir.path() + "/lib", "-l", "mylib", "-e", "ngx.say(mylib.hello(), ' ', require('pkg').v)"},
               "loading mylib\nhello 42\n");

  RunResult no_dir = lua({"-I", dir.path() + "/nope", "-e", "ngx.say(1)"});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_EQ(no_dir.out, "");
  EXPECT_NE(no_dir.err.find("search directory"), std::string::npos) << no_dir.err;
}

TEST(LuaCommandTest, RunsInTimerPhaseAsWorkerZero) {
  expectOutput({"-e",
                "ngx.ctx.x = 1\n"
                "ngx.say(ngx.get_phase(), ' ', ngx.worker.id(), ' ', ngx.worker.count(), ' ', ngx.ctx.x)\n"
                "local sema = require('ngx.semaphore').new()\n"
                "ngx.thread.spawn(function() ngx.sleep(0.01) sema:post(1) end)\n"
                "ngx.say('sema ', sema:wait(1))"},
               "timer 0 1 1\nsema true\n");
}

TEST(LuaCommandTest, UsageAndBadOptions) {
  RunResult help = lua({"-h"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Usage: tidegate lua"), std::string::npos) << help.out;
  RunResult nothing = lua({});
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.err.find("neither a script nor -e code"), std::string::npos) << nothing.err;
  RunResult bad = lua({"-x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("invalid option: \"-x\""), std::string::npos) << bad.err;
  RunResult no_value = lua({"-e"});
  EXPECT_EQ(no_value.exit_code, 1);
  EXPECT_NE(no_value.err.find("requires a value"), std::string::npos) << no_value.err;
}

// Outside the subcommand, -e keeps nginx's meaning: the error log file.
TEST(CliTest, DashEIsStillTheErrorLogPath) {
  TempDir dir;
  dir.write("conf/t.conf", "events {}\nhttp { server { listen 127.0.0.1:" + std::to_string(freePort()) +
                               "; return 200 \"x\"; } }\n");
  dir.write("logs/.keep", "");  // the default access log's directory
  std::string log = dir.path() + "/cli-error.log";
  RunResult r = runTidegate({"-p", dir.path(), "-c", "conf/t.conf", "-e", log, "-t"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("test is successful"), std::string::npos) << r.err;
  EXPECT_TRUE(dir.exists("cli-error.log"));
}

}  // namespace
}  // namespace tidegate::test
