// Lua modules pushed through the admin API, as the state directory keeps
// them: `lua/index.json` names every module, its current version and its
// history; `lua/<md5>.lua` holds each version's source (by content, so
// history and rollback cost nothing more). The admin API writes both (the
// source first, then the index, each atomically); workers only read.
//
// index.json: {"version": N, "modules": {"name": {"md5": "...", "time": ms,
//              "history": [{"md5": "...", "time": ms}, ...]}}}
// `version` counts every push, rollback and delete (Slardar's GET /lua
// `version`); history is oldest first and ends with the current version.
//
// Sandboxed functions (lua/sandbox/functions.h) are kept the same way in
// `functions/` (index.json and <md5>.lua): every call below takes the
// subdirectory, kModuleKind or kFunctionKind.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tidegate::lua {

struct ModuleVersion {
  std::string md5;
  int64_t time_ms = 0;  // wall clock of the push
};

struct ModuleIndex {
  uint64_t version = 0;
  struct Module {
    std::string md5;
    int64_t time_ms = 0;
    std::vector<ModuleVersion> history;  // oldest first, the current one last
  };
  std::map<std::string, Module> modules;

  std::string toJson() const;
};

constexpr const char* kModuleKind = "lua";
constexpr const char* kFunctionKind = "functions";

std::string moduleDir(const std::string& state_dir, const char* kind = kModuleKind);
std::string moduleSourcePath(const std::string& state_dir, const std::string& md5, const char* kind = kModuleKind);
// A missing index is an empty one. False with *err on an unreadable or
// malformed file.
bool readModuleIndex(const std::string& state_dir, ModuleIndex* out, std::string* err, const char* kind = kModuleKind);
bool readModuleSource(const std::string& state_dir, const std::string& md5, std::string* out, std::string* err,
                      const char* kind = kModuleKind);
// Lower-case hex MD5 of `data`.
std::string md5Hex(const std::string& data);
// A module name as require takes it: letters, digits, '_', '-' and '.'
// separators, at most 128 bytes.
bool validModuleName(const std::string& name);

}  // namespace tidegate::lua
