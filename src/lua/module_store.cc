#include "lua/module_store.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "conf/parser.h"

namespace tidegate::lua {

using nlohmann::json;

std::string moduleDir(const std::string& state_dir, const char* kind) {
  std::string dir = state_dir;
  return dir.append(1, '/').append(kind);
}

std::string moduleSourcePath(const std::string& state_dir, const std::string& md5, const char* kind) {
  return moduleDir(state_dir, kind).append(1, '/').append(md5).append(".lua");
}

std::string ModuleIndex::toJson() const {
  json mods = json::object();
  for (const auto& [name, m] : modules) {
    json history = json::array();
    for (const ModuleVersion& v : m.history) history.push_back(json{{"md5", v.md5}, {"time", v.time_ms}});
    mods[name] = json{{"md5", m.md5}, {"time", m.time_ms}, {"history", history}};
  }
  return json{{"version", version}, {"modules", mods}}.dump(1) + "\n";
}

bool readModuleIndex(const std::string& state_dir, ModuleIndex* out, std::string* err, const char* kind) {
  *out = ModuleIndex();
  std::string path = moduleDir(state_dir, kind) + "/index.json";
  std::string text;
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return true;
  if (!conf::readFile(path, &text, err)) return false;
  json doc = json::parse(text, nullptr, false);
  auto bad = [&] {
    *err = "\"" + path + "\" is not a tidegate module index";
    return false;
  };
  if (!doc.is_object() || !doc.contains("modules") || !doc["modules"].is_object()) return bad();
  out->version = doc.value("version", uint64_t{0});
  for (const auto& [name, m] : doc["modules"].items()) {
    if (!m.is_object() || !m.contains("md5") || !m["md5"].is_string()) return bad();
    ModuleIndex::Module mod;
    mod.md5 = m["md5"].get<std::string>();
    mod.time_ms = m.value("time", int64_t{0});
    if (m.contains("history") && m["history"].is_array()) {
      for (const json& v : m["history"]) {
        if (!v.is_object() || !v.contains("md5") || !v["md5"].is_string()) return bad();
        mod.history.push_back({v["md5"].get<std::string>(), v.value("time", int64_t{0})});
      }
    }
    out->modules.emplace(name, std::move(mod));
  }
  return true;
}

bool readModuleSource(const std::string& state_dir, const std::string& md5, std::string* out, std::string* err,
                      const char* kind) {
  return conf::readFile(moduleSourcePath(state_dir, md5, kind), out, err);
}

std::string md5Hex(const std::string& data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_md5(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; i++) {
    out.push_back(kHex[d[i] >> 4]);
    out.push_back(kHex[d[i] & 15]);
  }
  return out;
}

bool validModuleName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.front() == '.' || name.back() == '.') return false;
  char prev = 0;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

}  // namespace tidegate::lua
