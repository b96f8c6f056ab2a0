// A deadline kept on a one-shot libuv timer that is restarted only when it
// would fire too late. Moving a deadline later, which every read and write
// of a busy connection does, then costs a store instead of two timer-heap
// updates; in exchange the timer may fire early, and its callback asks
// expired(), which re-arms for the rest when the deadline has not come.
// (http::Connection keeps the same rule with more states of its own.)
#pragma once

#include <uv.h>

#include <cstdint>

namespace tidegate::core {

class LazyTimer {
 public:
  // The handle stays its owner's: it initialises it, sets its data and
  // closes it.
  uv_timer_t* handle() { return &timer_; }

  // The deadline is `ms` from the loop's time; `cb` runs at or before it.
  void set(uint64_t ms, uv_timer_cb cb) {
    deadline_ = uv_now(timer_.loop) + ms;
    pending_ = true;
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && fires_at_ <= deadline_) return;
    fires_at_ = deadline_;
    uv_timer_start(&timer_, cb, ms, 0);
  }

  // No deadline: a started timer fires to no effect.
  void clear() { pending_ = false; }

  // In the callback: true if the deadline has come (it is then cleared);
  // false if there is none, or if it is later (the timer restarts for the
  // rest, with `cb`).
  bool expired(uv_timer_cb cb) {
    if (!pending_) return false;
    uint64_t now = uv_now(timer_.loop);
    if (deadline_ > now) {
      fires_at_ = deadline_;
      uv_timer_start(&timer_, cb, deadline_ - now, 0);
      return false;
    }
    pending_ = false;
    return true;
  }

 private:
  // The state first: with the handle's loop, it shares a cache line (set()
  // runs on every read and write of a connection that may be cold).
  uint64_t deadline_ = 0;  // loop time in ms, while pending_
  uint64_t fires_at_ = 0;  // when the started timer fires, while it is active
  bool pending_ = false;
  uv_timer_t timer_;
};

}  // namespace tidegate::core
