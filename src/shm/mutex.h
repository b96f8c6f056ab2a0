// A lock that lives in shared memory and survives its holder's death.
//
// A pthread mutex made PTHREAD_PROCESS_SHARED (it works across the forked
// workers that share the zone) and PTHREAD_MUTEX_ROBUST: when a process dies
// holding it, the kernel hands it to the next locker with EOWNERDEAD instead
// of leaving every worker blocked forever. lock() then marks the mutex
// consistent and reports kOwnerDied; the caller owns the lock as usual and must
// repair whatever the dead holder was changing before it relies on it (Dict
// does this with a dirty flag, see dict.h). The pthread_mutex_t is stored in the
// zone itself, so it needs no pointers between processes.
#pragma once

#include <pthread.h>

namespace tidegate::shm {

enum class LockResult { kOk, kOwnerDied };

class RobustMutex {
 public:
  // Formats `m` (in shared memory, before fork); false if pthread refuses.
  static bool init(pthread_mutex_t* m);

  explicit RobustMutex(pthread_mutex_t* m) : m_(m) {}
  LockResult lock();
  void unlock();

 private:
  pthread_mutex_t* m_;
};

}  // namespace tidegate::shm
