// `tidegate lua`: runs Lua code with the ngx API from the command line, as
// OpenResty's `resty` does, without a conf, listeners or workers:
//   tidegate lua [-e code]... [-l lib]... [-I dir]... [--errlog-level level] [script [args...]]
// The code runs in the context of a timer (ngx.get_phase() is "timer") on a
// private loop; ngx.say/ngx.print/print write to stdout, the error log
// (ngx.log) goes to stderr, ngx.exit(n) ends the process with status n.
#pragma once

namespace tidegate::process {

// argv[1] is "lua". Returns the process exit status: 0, 1 after a Lua
// error or a bad option, or ngx.exit's argument (which exits at once).
int runLuaCommand(int argc, char** argv);

}  // namespace tidegate::process
