// A worker process: one libuv loop serving the data plane until the master
// tells it to stop over its channel (a socketpair end): 'q' graceful quit,
// 't' fast stop, 'r' reopen logs. EOF on the channel (the master died) is a
// graceful quit.
#pragma once

#include <vector>

#include "conf/config.h"

namespace tidegate::process {

// Runs a worker in the calling (already forked) process and returns its exit
// status. `channel` is -1 when there is no master (master_process off); the
// worker then handles QUIT/TERM/INT/USR1 itself.
int runWorker(conf::ConfigPtr cfg, const std::vector<int>& listen_fds, int channel);

}  // namespace tidegate::process
