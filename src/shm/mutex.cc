#include "shm/mutex.h"

#include <cerrno>
#include <cstdlib>

namespace tidegate::shm {

bool RobustMutex::init(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  if (pthread_mutexattr_init(&attr) != 0) return false;
  bool ok = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0 &&
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0 && pthread_mutex_init(m, &attr) == 0;
  pthread_mutexattr_destroy(&attr);
  return ok;
}

LockResult RobustMutex::lock() {
  int rc = pthread_mutex_lock(m_);
  if (rc == 0) return LockResult::kOk;
  if (rc == EOWNERDEAD) {
    // Always made consistent at once, so ENOTRECOVERABLE cannot happen.
    pthread_mutex_consistent(m_);
    return LockResult::kOwnerDied;
  }
  // EINVAL/EDEADLK: a corrupted zone or a lock taken twice; both are bugs.
  std::abort();
}

void RobustMutex::unlock() { pthread_mutex_unlock(m_); }

}  // namespace tidegate::shm
