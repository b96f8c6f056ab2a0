// The master process: owns the listening sockets and the pid file, forks
// workers, respawns the ones that die (backing off when one keeps dying),
// and turns signals into actions:
//   HUP reload, QUIT graceful stop, TERM/INT fast stop, USR1 reopen logs.
#pragma once

#include "conf/config.h"
#include "conf/loader.h"
#include "lua/vm.h"
#include "process/listeners.h"

namespace tidegate::process {

// Runs until stopped; returns the process exit status. `opts` is kept to
// re-read the conf on HUP.
// `listeners` were opened by the caller (before daemonizing, so that a bind
// error is reported to the shell); the master takes them over.
// `vm` holds the state init_by_lua* left; workers inherit it through fork.
int runMaster(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, const conf::LoadOptions& opts,
              ListenerSet* listeners);

// master_process off: one process serves, handling the signals itself.
int runSingle(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, ListenerSet* listeners);

// Creates the Lua VM for `cfg` and runs init_by_lua* in it (at start, -t and
// each reload). nullptr with *err ("init_by_lua error: ...") on failure.
std::shared_ptr<lua::Vm> prepareLua(conf::ConfigPtr cfg, std::string* err);

// The command line, kept for a binary upgrade (USR2 re-executes argv[0]).
void saveArgv(char** argv);
char** savedArgv();

// The error log a conf asks for, or -e's when it names none.
std::string errorLogPath(const conf::Config& cfg, const conf::LoadOptions& opts);

}  // namespace tidegate::process
