/* The C functions tidegate exports for LuaJIT's FFI (ffi.C.tg_*). The Lua
 * modules under lua/ get them from the generated "tidegate.cdefs" module
 * (cmake/embed_lua.cmake), so this file is their only declaration.
 * An FFI call does not stop a JIT trace the way a lua_CFunction does
 * (DESIGN.md section 3). */
#ifndef TIDEGATE_FFI_H
#define TIDEGATE_FFI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The request running in the current Lua phase, or NULL (init, timers). */
void* tg_get_request(void);
/* ngx.process.type(): 0 single (master_process off), 1 master, 2 worker. */
int tg_process_type(void);
/* The master's pid (the worker's parent; our own pid in a single process). */
int tg_master_pid(void);

/* The request-facing fast paths (lua/tidegate/fastpath.lua). `r` is what
 * tg_get_request() returned. They return 0 on success; any other value
 * means "take the slow path" (the lua_CFunction, which raises OpenResty's
 * error or handles the rare case). They never call back into Lua. */

/* ngx.now(): seconds since the epoch, millisecond resolution. */
double tg_now(void);
/* ngx.var.NAME: 0 with the value in *value and *value_len (valid until the next
 * call), 1 for nil (unknown or unset variable), < 0: slow path. */
int tg_var_get(void* r, const char* name, size_t len, const char** value, size_t* value_len);
/* ngx.ctx: the registry reference of the request's ctx table; < 0 when it
 * does not exist yet or there is no request (slow path creates it). */
int tg_ctx_ref(void* r);
/* ngx.say / ngx.print of one string (newline: ngx.say): 0 done, < 0: slow
 * path (a phase without output, after ngx.eof). */
int tg_output(void* r, const char* data, size_t len, int newline);
/* ngx.say / ngx.print of one number that is an integer of up to 14 digits
 * (-0 prints as 0); < 0: slow path (any other number, or as tg_output). */
int tg_output_integer(void* r, double n, int newline);
/* ngx.req.get_headers: one header. */
typedef struct {
  const char* name;
  size_t name_len;
  const char* value;
  size_t value_len;
} tg_header_t;
/* Fills the first `n` request headers (with ngx.req.set_header changes)
 * into `out`, names lower-cased unless `raw` (valid until the next call);
 * returns how many headers there are in all (more than `n`: call again with
 * room for them), or < 0: slow path. */
int tg_req_headers(void* r, tg_header_t* out, int n, int raw);
/* ngx.header.NAME = value (one string): 0 done, < 0: slow path. */
int tg_header_set(void* r, const char* name, size_t name_len, const char* value, size_t value_len);

/* ngx.balancer (lua/ngx/balancer.lua) for the balancer_by_lua* code of the
 * request `r` (what tg_get_request() returned). Each returns 0 on success;
 * -1 with a static message in *err, which is OpenResty's: "API disabled in
 * the current context" anywhere but in balancer_by_lua*, else what was
 * wrong. */

/* `addr` is an IP address ("[v6]" too), optionally with ":port", which then
 * wins over `port`. */
int tg_balancer_set_current_peer(void* r, const char* addr, size_t len, int port, const char** err);
/* 1 instead of 0 when `count` was reduced to fit proxy_next_upstream_tries
 * (the warning "reduced tries due to limit" in *err). `statuses` (`n` of
 * them) are retried for the rest of the request as if proxy_next_upstream
 * named them (tidegate's extension). */
int tg_balancer_set_more_tries(void* r, int count, const int* statuses, int n, const char** err);
/* The previous try of the request: 0 on the first try, else 2 ("next") or
 * 4 ("failed"), nginx's peer states, with its status in *status. */
int tg_balancer_get_last_failure(void* r, int* status, const char** err);
/* Milliseconds; 0 keeps the value in force. */
int tg_balancer_set_timeouts(void* r, long connect_ms, long send_ms, long read_ms, const char** err);
/* The peer set by set_current_peer goes back to the pool after the try. */
int tg_balancer_enable_keepalive(void* r, long idle_timeout_ms, long max_requests, const char** err);
int tg_balancer_recreate_request(void* r, const char** err);

/* ngx.shared.DICT get/set fast paths (api/ngx_shared.cc). `zone` is the
 * dict's [1] (a lightuserdata); the key is valid (1..65535 bytes). */
typedef struct {
  int type;           /* 1 boolean, 3 number, 4 string (LUA_T*) */
  double number;      /* number; boolean: 0 or 1 */
  unsigned int flags;
  size_t len;         /* string length */
  int forcible;
} tg_shdict_result_t;
/* get: 0 found (a string in *value, valid until the next tg_shdict_* call),
 * 1 absent or expired, < 0: slow path (a list, an error). */
int tg_shdict_get(void* zone, const char* key, size_t key_len, tg_shdict_result_t* res, const char** value);
/* set(key, value, exptime, flags) with `type` 1/3/4 as above: 0 stored
 * (res->forcible), 1 "no memory" (res->forcible), < 0: slow path. */
int tg_shdict_set(void* zone, const char* key, size_t key_len, int type, const char* str, size_t str_len,
                  double number, double exptime, unsigned int flags, tg_shdict_result_t* res);
/* incr(key, n, init?, init_ttl?): 0 with the new value in res->number (and
 * res->forcible); < 0: nothing changed, slow path (it returns the error). */
int tg_shdict_incr(void* zone, const char* key, size_t key_len, double n, int has_init, double init,
                   double init_ttl, tg_shdict_result_t* res);

/* Two of nginx's own functions, under nginx's names and signatures, because
 * Debian's lua-nginx-string (nginx/string.lua) declares and calls them
 * through ffi.C as it would inside nginx (the one exception to the tg_
 * prefix). */
/* Writes the `len` bytes at `src` as 2 * `len` lowercase hex digits at `dst`
 * (no terminating NUL); returns dst + 2 * len. */
unsigned char* ngx_hex_dump(unsigned char* dst, const unsigned char* src, size_t len);
/* The decimal number in the `n` bytes at `line` (digits only, no sign, no
 * spaces), or -1 when `n` is 0, a byte is not a digit, or the value does not
 * fit in an intptr_t. */
intptr_t ngx_atoi(const unsigned char* line, size_t n);

#ifdef __cplusplus
}
#endif

#endif
