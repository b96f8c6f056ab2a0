-- The C declarations of include/tidegate/ffi.h, declared once for every
-- module that calls them (ffi.cdef refuses a second declaration).
local ffi = require "ffi"

ffi.cdef [[
void* tg_get_request(void);
int tg_process_type(void);
int tg_master_pid(void);
double tg_now(void);
int tg_var_get(void* r, const char* name, size_t len, const char** value, size_t* value_len);
int tg_ctx_ref(void* r);
int tg_header_set(void* r, const char* name, size_t name_len, const char* value, size_t value_len);
]]

return ffi.C
