// The master process: owns the listening sockets and the pid file, forks
// workers, respawns the ones that die (backing off when one keeps dying),
// and turns signals into actions:
//   HUP reload, QUIT graceful stop, TERM/INT fast stop, USR1 reopen logs.
#pragma once

#include "conf/config.h"
#include "conf/loader.h"

namespace tidegate::process {

// Runs until stopped; returns the process exit status. `opts` is kept to
// re-read the conf on HUP.
int runMaster(conf::ConfigPtr cfg, const conf::LoadOptions& opts);

// master_process off: one process serves, handling the signals itself.
int runSingle(conf::ConfigPtr cfg);

}  // namespace tidegate::process
