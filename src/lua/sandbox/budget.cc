#include "lua/sandbox/budget.h"

namespace tidegate::lua::sandbox {
namespace {

// Instructions between two hook calls: small enough that a budget is
// exceeded by at most this much, large enough that the hook costs little.
constexpr int kHookStep = 1000;
// After the memory budget is passed, small allocations are still granted
// up to this much more, so that raising and logging the kill can allocate.
constexpr uint64_t kMemorySlack = 1u << 20;

const char kKill = 0;
const char kSandboxKey = 0;

}  // namespace

const char* budgetName(Budget b) {
  switch (b) {
    case Budget::kNone: return "none";
    case Budget::kInstructions: return "lua_sandbox_instructions";
    case Budget::kTimeout: return "lua_sandbox_timeout";
    case Budget::kMemory: return "lua_sandbox_memory";
  }
  return "?";
}

void* BudgetRun::killKey() { return const_cast<char*>(&kKill); }
void* BudgetRun::sandboxKey() { return const_cast<char*>(&kSandboxKey); }

BudgetRun::BudgetRun(lua_State* L, uv_loop_t* loop, Limits limits, std::function<void()> on_timeout)
    : L_(L),
      limits_(limits), on_timeout_(std::move(on_timeout)), start_ns_(uv_hrtime()) {
  if (limits_.timeout_ms == 0) return;
  timer_ = new uv_timer_t;
  uv_timer_init(loop, timer_);
  timer_->data = this;
  uv_timer_start(timer_, onTimer, limits_.timeout_ms, 0);
}

BudgetRun::~BudgetRun() {
  if (active_ == this) active_ = nullptr;
  if (!timer_) return;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

std::string BudgetRun::describe() const {
  std::string out = budgetName(killed_);
  switch (killed_) {
    case Budget::kInstructions: out.append(" ").append(std::to_string(limits_.instructions)); break;
    case Budget::kTimeout: out.append(" ").append(std::to_string(limits_.timeout_ms)).append("ms"); break;
    case Budget::kMemory: out.append(" ").append(std::to_string(limits_.memory)).append(" bytes"); break;
    case Budget::kNone: break;
  }
  return out;
}

void BudgetRun::enter(lua_State* co) {
  swapStrings(true);
  active_ = this;
  lua_Alloc cur = lua_getallocf(L_, &alloc_ud_);
  if (cur != alloc) {
    orig_alloc_ = cur;
    lua_setallocf(L_, alloc, alloc_ud_);
  }
  lua_sethook(co, hook, LUA_MASKCOUNT, kHookStep);
}

void BudgetRun::leave(lua_State* co) {
  lua_sethook(co, nullptr, 0, 0);
  if (orig_alloc_) lua_setallocf(L_, orig_alloc_, alloc_ud_);
  active_ = nullptr;
  swapStrings(false);
}

// Stack: [] -> [sandbox] -> [] (sandbox.enter or sandbox.leave runs).
void BudgetRun::swapStrings(bool sandboxed) {
  lua_pushlightuserdata(L_, sandboxKey());
  lua_rawget(L_, LUA_REGISTRYINDEX);
  if (lua_istable(L_, -1)) {
    lua_getfield(L_, -1, sandboxed ? "enter" : "leave");
    if (lua_pcall(L_, 0, 0, 0) != 0) lua_pop(L_, 1);  // it does not fail: no allocation, no metamethod
  }
  lua_pop(L_, 1);
}

void BudgetRun::kill(Budget b) {
  if (killed_ == Budget::kNone) killed_ = b;
}

// Every kHookStep instructions of a sandboxed coroutine. Raises the kill
// (Stack: [] -> error) once a budget is exceeded, and at every later tick.
void BudgetRun::hook(lua_State* L, lua_Debug*) {
  BudgetRun* run = active_;
  if (!run) return;
  run->instructions_ += kHookStep;
  if (run->limits_.instructions && run->instructions_ > run->limits_.instructions) run->kill(Budget::kInstructions);
  if (run->limits_.timeout_ms && uv_hrtime() - run->start_ns_ > run->limits_.timeout_ms * 1000000) {
    run->kill(Budget::kTimeout);
  }
  if (run->killed_ == Budget::kNone) return;
  lua_pushlightuserdata(L, killKey());
  lua_error(L);
}

bool BudgetRun::charge(size_t bytes) {
  allocated_ += bytes;
  if (!limits_.memory || allocated_ <= limits_.memory) return true;
  kill(Budget::kMemory);
  // Refuse the allocation that passed the budget and anything large after
  // it; small ones go on for a while, so that the kill can be raised.
  return bytes < 4096 && allocated_ <= limits_.memory + kMemorySlack;
}

// The allocator while a sandboxed coroutine runs (active_ is set then).
void* BudgetRun::alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  BudgetRun* run = active_;
  if (nsize > osize && !run->charge(nsize - osize)) return nullptr;
  return run->orig_alloc_(ud, ptr, osize, nsize);
}

void BudgetRun::onTimer(uv_timer_t* t) noexcept {
  auto* self = static_cast<BudgetRun*>(t->data);
  self->kill(Budget::kTimeout);
  std::function<void()> f = self->on_timeout_;
  f();  // may destroy self
}

}  // namespace tidegate::lua::sandbox
