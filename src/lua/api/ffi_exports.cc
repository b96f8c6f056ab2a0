// extern "C" entry points for the Lua modules under lua/ (declared in
// include/tidegate/ffi.h). They reach the VM through Vm::active(), since an
// FFI call carries no lua_State.
#include "tidegate/ffi.h"

#include <unistd.h>

#include "lua/phases/content.h"
#include "lua/vm.h"

using tidegate::lua::Vm;

extern "C" {

void* tg_get_request(void) {
  Vm* vm = Vm::active();
  return vm ? static_cast<void*>(vm->current()) : nullptr;
}

int tg_process_type(void) {
  Vm* vm = Vm::active();
  if (!vm) return 0;
  if (vm->workerId() >= 0) return vm->config().master_process ? 2 : 0;
  return vm->config().master_process ? 1 : 0;
}

int tg_master_pid(void) {
  Vm* vm = Vm::active();
  if (vm && vm->workerId() >= 0 && vm->config().master_process) return static_cast<int>(getppid());
  return static_cast<int>(getpid());
}

}  // extern "C"
