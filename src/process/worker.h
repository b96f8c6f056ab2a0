// A worker process: one libuv loop serving the data plane until the master
// tells it to stop over its channel (a socketpair end): 'q' graceful quit,
// 't' fast stop, 'r' reopen logs. EOF on the channel (the master died) is a
// graceful quit.
#pragma once

#include <vector>

#include <memory>

#include "conf/config.h"
#include "lua/vm.h"

namespace tidegate::process {

// Runs a worker in the calling (already forked) process and returns its exit
// status. `channel` is -1 when there is no master (master_process off); the
// worker then handles QUIT/TERM/INT/USR1 itself.
// `vm` is the Lua VM the master prepared (init_by_lua* already run); the
// worker runs init_worker_by_lua* in it as worker number `slot`.
int runWorker(conf::ConfigPtr cfg, std::shared_ptr<lua::Vm> vm, const std::vector<int>& listen_fds, int channel,
              int slot);

}  // namespace tidegate::process
