// Crash points for tests: lets a unit test kill a process at a chosen place
// inside a dict or upstream table operation while it holds that structure's
// lock. Compiled only where
// TIDEGATE_TEST_HOOKS is defined (builds with -DTIDEGATE_TESTS=ON, see
// CMakeLists.txt); elsewhere the points are no-ops.
#pragma once

#ifdef TIDEGATE_TEST_HOOKS

namespace tidegate::shm::test {

enum class CrashPoint {
  kUnlinkBeforeLru,  // an entry being freed is out of its hash chain, still in the LRU list
  kGetBeforeTouch,   // get: lock held, nothing written yet
  kInsertBeforeLru,  // a new entry is in its hash chain, not yet in the LRU list
  kUpstreamPut,      // upstream table: a new spec is allocated, not yet linked
};

using CrashHook = void (*)(CrashPoint);
// nullptr disarms. The hook runs with the dict lock held.
void setCrashHook(CrashHook hook);
void crashPoint(CrashPoint point);

}  // namespace tidegate::shm::test

#define TG_SHM_CRASH_POINT(p) ::tidegate::shm::test::crashPoint(::tidegate::shm::test::CrashPoint::p)

#else

#define TG_SHM_CRASH_POINT(p) ((void)0)

#endif
