// The Lua modules under lua/ (the FFI wrappers, resty.core shims, ngx.re,
// ...), compiled into the binary by cmake/embed_lua.cmake so the gateway
// stays one file. Vm::create() registers them in package.preload, so
// `require "ngx.re"` finds them first; a module of the same name on
// lua_package_path does not replace them.
#pragma once

namespace tidegate::lua {

struct EmbeddedModule {
  const char* name;       // as `require` names it: "ngx.re"
  const char* chunkname;  // "@lua/ngx/re.lua", for tracebacks
  const char* source;
};

// Terminated by an entry with a null name.
extern const EmbeddedModule kEmbeddedModules[];

}  // namespace tidegate::lua
