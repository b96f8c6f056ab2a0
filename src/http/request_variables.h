// The variable values a request's own directives and scripts assign: the
// conf's user variables (set, set_by_lua*, ngx.var.NAME = v), by the id the
// conf gave them, and a replaced query string (set $args, ngx.var.args).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tidegate::http {

class RequestVariables {
 public:
  // nginx's three states of an indexed variable: never assigned (reads as
  // "" with a warning), a value, or "not found" (assigned nil: ngx.var
  // reads nil, a conf value reads "").
  enum class State : uint8_t { kUnset, kValue, kNotFound };

  State get(uint16_t id, std::string_view* out) const {
    if (id >= slots_.size() || slots_[id].state != State::kValue) {
      *out = {};
      return id < slots_.size() ? slots_[id].state : State::kUnset;
    }
    *out = slots_[id].value;
    return State::kValue;
  }
  void set(uint16_t id, std::string_view value) {
    Slot& s = slot(id);
    s.value.assign(value);
    s.state = State::kValue;
  }
  // Takes the string's buffer (the caller built the value in it).
  void take(uint16_t id, std::string* value) {
    Slot& s = slot(id);
    s.value.swap(*value);
    s.state = State::kValue;
  }
  void setNotFound(uint16_t id) { slot(id).state = State::kNotFound; }

  bool argsReplaced() const { return args_replaced_; }
  const std::string& args() const { return args_; }
  void replaceArgs(std::string_view args) {
    args_.assign(args);
    args_replaced_ = true;
  }

  // Between requests: every slot unset, strings keep their capacity.
  void clear() {
    for (Slot& s : slots_) s.state = State::kUnset;
    args_.clear();
    args_replaced_ = false;
  }

 private:
  struct Slot {
    std::string value;
    State state = State::kUnset;
  };
  Slot& slot(uint16_t id) {
    if (id >= slots_.size()) slots_.resize(static_cast<size_t>(id) + 1);
    return slots_[id];
  }

  std::vector<Slot> slots_;
  std::string args_;
  bool args_replaced_ = false;
};

}  // namespace tidegate::http
