/* The C functions tidegate exports for LuaJIT's FFI (ffi.C.tg_*). The Lua
 * modules under lua/ declare them with ffi.cdef; keep the two in step.
 * An FFI call does not stop a JIT trace the way a lua_CFunction does
 * (DESIGN.md section 3). */
#ifndef TIDEGATE_FFI_H
#define TIDEGATE_FFI_H

#ifdef __cplusplus
extern "C" {
#endif

/* The request running in the current Lua phase, or NULL (init, timers). */
void* tg_get_request(void);
/* ngx.process.type(): 0 single (master_process off), 1 master, 2 worker. */
int tg_process_type(void);
/* The master's pid (the worker's parent; our own pid in a single process). */
int tg_master_pid(void);

#ifdef __cplusplus
}
#endif

#endif
