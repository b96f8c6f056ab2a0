// String utilities of the `ngx` table, available in every phase:
// md5/sha1/hmac (OpenSSL), crc32, base64, URI escaping, args, SQL quoting.
// Results follow lua-nginx-module.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <string>

#include "http/uri.h"
#include "lua/api/common.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

std::string_view arg(lua_State* L, int idx) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, idx, &len);
  return std::string_view(s, len);
}

// A nil argument counts as "" in these functions, as in OpenResty.
std::string_view optArg(lua_State* L, int idx) {
  if (lua_isnil(L, idx)) return {};
  return arg(L, idx);
}

int pushHex(lua_State* L, const unsigned char* bytes, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

bool digest(const EVP_MD* md, std::string_view s, unsigned char* out, unsigned* len) {
  return EVP_Digest(s.data(), s.size(), out, len, md, nullptr) == 1;
}

int ngxMd5(lua_State* L) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!digest(EVP_md5(), optArg(L, 1), d, &n)) return luaL_error(L, "md5 failed");
  return pushHex(L, d, n);
}

int ngxMd5Bin(lua_State* L) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!digest(EVP_md5(), optArg(L, 1), d, &n)) return luaL_error(L, "md5 failed");
  lua_pushlstring(L, reinterpret_cast<char*>(d), n);
  return 1;
}

int ngxSha1Bin(lua_State* L) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!digest(EVP_sha1(), optArg(L, 1), d, &n)) return luaL_error(L, "sha1 failed");
  lua_pushlstring(L, reinterpret_cast<char*>(d), n);
  return 1;
}

int ngxHmacSha1(lua_State* L) {
  std::string_view key = arg(L, 1), msg = arg(L, 2);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
            msg.size(), d, &n)) {
    return luaL_error(L, "hmac_sha1 failed");
  }
  lua_pushlstring(L, reinterpret_cast<char*>(d), n);
  return 1;
}

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as nginx's ngx_crc32.
uint32_t crc32(std::string_view s) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) c = kTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

int ngxCrc32(lua_State* L) {
  lua_pushnumber(L, crc32(arg(L, 1)));
  return 1;
}

int ngxEncodeBase64(lua_State* L) {
  std::string_view s = optArg(L, 1);
  bool no_padding = lua_toboolean(L, 2);
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  if (no_padding) {
    while (!out.empty() && out.back() == '=') out.pop_back();
  }
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// nil for input that is not base64 (OpenResty accepts missing padding).
int ngxDecodeBase64(lua_State* L) {
  std::string in(arg(L, 1));
  for (char c : in) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) {
      lua_pushnil(L);
      return 1;
    }
  }
  while (in.size() % 4 != 0) in.push_back('=');
  size_t pad = 0;
  for (size_t i = in.size(); i > 0 && in[i - 1] == '='; i--) pad++;
  if (pad > 2 || (in.size() > 0 && in.find('=') < in.size() - pad)) {
    lua_pushnil(L);
    return 1;
  }
  std::string out(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) {
    lua_pushnil(L);
    return 1;
  }
  out.resize(static_cast<size_t>(n) - pad);
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// ngx.escape_uri: everything but unreserved characters (RFC 3986 2.3)
// becomes %XX (upper-case hex), as nginx's URI-component escaping.
std::string escapeUri(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

int ngxEscapeUri(lua_State* L) {
  std::string out = escapeUri(optArg(L, 1));
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

int ngxUnescapeUri(lua_State* L) {
  std::string out = http::unescapeComponent(optArg(L, 1));
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// Appends "key" or "key=value" for one value; false values are skipped.
void appendArg(lua_State* L, const std::string& key, int vidx, std::string* out) {
  int t = lua_type(L, vidx);
  if (t == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, vidx)) return;
    if (!out->empty()) out->push_back('&');
    out->append(key);
    return;
  }
  if (t != LUA_TSTRING && t != LUA_TNUMBER) {
    luaL_error(L, "attempt to use %s as query arg value", luaL_typename(L, vidx));
    return;
  }
  if (!out->empty()) out->push_back('&');
  size_t len = 0;
  const char* v = lua_tolstring(L, vidx, &len);
  out->append(key).append("=").append(escapeUri(std::string_view(v, len)));
}

int ngxEncodeArgs(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  std::string out = encodeArgs(L, 1);
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// ngx.quote_sql_str: a single-quoted MySQL string literal.
int ngxQuoteSqlStr(lua_State* L) {
  std::string_view s = arg(L, 1);
  std::string out = "'";
  for (char c : s) {
    switch (c) {
      case '\0': out += "\\0"; break;
      case '\b': out += "\\b"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\x1a': out += "\\Z"; break;
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      case '"': out += "\\\""; break;
      default: out += c;
    }
  }
  out += "'";
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

}  // namespace

std::string encodeArgs(lua_State* L, int idx) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  std::string out;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {  // Stack: [..., key, value]
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 1);
      continue;  // OpenResty ignores non-string keys
    }
    std::string key = escapeUri(lua_tostring(L, -2));
    if (lua_istable(L, -1)) {
      size_t n = lua_objlen(L, -1);
      for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, static_cast<int>(i));
        appendArg(L, key, lua_gettop(L), &out);
        lua_pop(L, 1);
      }
    } else {
      appendArg(L, key, lua_gettop(L), &out);
    }
    lua_pop(L, 1);
  }
  return out;
}

// Stack: [ngx] -> [ngx]
void openNgxString(lua_State* L) {
  static const luaL_Reg kFns[] = {
      {"md5", ngxMd5},
      {"md5_bin", ngxMd5Bin},
      {"sha1_bin", ngxSha1Bin},
      {"hmac_sha1", ngxHmacSha1},
      {"crc32_short", ngxCrc32},
      {"crc32_long", ngxCrc32},
      {"encode_base64", ngxEncodeBase64},
      {"decode_base64", ngxDecodeBase64},
      {"escape_uri", ngxEscapeUri},
      {"unescape_uri", ngxUnescapeUri},
      {"encode_args", ngxEncodeArgs},
      {"quote_sql_str", ngxQuoteSqlStr},
      {nullptr, nullptr},
  };
  for (const luaL_Reg* f = kFns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}

}  // namespace tidegate::lua
