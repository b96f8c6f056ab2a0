// ngx.re on PCRE2: match, find, gmatch, sub and gsub, in every phase, plus
// the helpers lua/ngx/re.lua builds split() and opt() on. Arguments, return
// values and error texts follow lua-resty-core's resty.core.regex, which is
// what OpenResty runs by default.
//
// Ownership: each VM has one Engine (match context, match data, JIT stack,
// cache counters) in a userdata with __gc, so lua_close frees it. Every
// compiled pattern is a Regex userdata with __gc; the compile-once cache is a
// Lua table (key: pattern .. "\0" .. options) holding them. A pattern that is
// not cached is freed as soon as the call is done with it, as OpenResty does.
//
// No frame here holds a C++ object with a destructor while it calls Lua
// (replacement functions, metamethods), so a Lua error unwinds nothing of ours.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

using core::LogLevel;

const char kEngineMeta[] = "tidegate.re.engine";
const char kRegexMeta[] = "tidegate.re.regex";

// What an options string ("jo", "isu", ...) asks for.
struct ReOptions {
  uint32_t compile = 0;  // PCRE2 compile options
  bool once = false;     // o: compile-once cache
  bool dfa = false;      // d
  bool jit = false;      // j
  bool dupnames = false; // D
  bool no_utf_check = false;  // U
};

// Fills *o; false with *bad set to the offending flag.
bool parseOptions(std::string_view text, ReOptions* o, char* bad) {
  for (char c : text) {
    switch (c) {
      case 'a': o->compile |= PCRE2_ANCHORED; break;
      case 'd': o->dfa = true; break;
      case 'D': o->compile |= PCRE2_DUPNAMES; o->dupnames = true; break;
      case 'i': o->compile |= PCRE2_CASELESS; break;
      case 'j': o->jit = true; break;
      // PCRE2 split PCRE1's JavaScript mode into these three (pcre2api, "PCRE2_ALT_BSUX").
      case 'J': o->compile |= PCRE2_ALT_BSUX | PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS; break;
      case 'm': o->compile |= PCRE2_MULTILINE; break;
      case 'o': o->once = true; break;
      case 's': o->compile |= PCRE2_DOTALL; break;
      case 'u': o->compile |= PCRE2_UTF; break;
      case 'U': o->compile |= PCRE2_UTF; o->no_utf_check = true; break;
      case 'x': o->compile |= PCRE2_EXTENDED; break;
      default: *bad = c; return false;
    }
  }
  return true;
}

struct CaptureName {
  uint32_t group;
  std::string name;
};

// A compiled pattern, living in a userdata (kRegexMeta).
struct Regex {
  pcre2_code* code = nullptr;
  uint32_t ncaptures = 0;  // 0 in DFA mode, which reports the whole match only
  ReOptions opts;
  bool cached = false;
  std::vector<CaptureName> names;  // the name table's order: by name, then group

  ~Regex() { pcre2_code_free(code); }
  bool utf() const { return (opts.compile & PCRE2_UTF) != 0; }
  // Frees the code now unless the cache holds it (the userdata stays, empty).
  void releaseIfUncached() {
    if (cached) return;
    pcre2_code_free(code);
    code = nullptr;
  }
};

// The offset after an empty match at `pos`: one byte, or one UTF-8
// character with the u flag (so the next search starts on a boundary).
size_t stepPast(const Regex& re, std::string_view subj, size_t pos) {
  pos++;
  if (re.utf()) {
    while (pos < subj.size() && (static_cast<unsigned char>(subj[pos]) & 0xC0) == 0x80) pos++;
  }
  return pos;
}

// OpenResty's pcre2 DFA workspace is 100 ints; more lets longer subjects
// with many live states match instead of failing with -43.
constexpr size_t kDfaWorkspace = 1000;
// lua-nginx-module's NGX_LUA_RE_MIN_JIT_STACK_SIZE.
constexpr size_t kMinJitStack = 32 * 1024;

// Per-VM matching state, in a userdata (kEngineMeta).
class Engine {
 public:
  explicit Engine(const conf::LuaConf& lc) : max_entries_(lc.regex_cache_max_entries) {
    mctx_ = pcre2_match_context_create(nullptr);
    if (mctx_ && lc.regex_match_limit > 0) {
      uint64_t limit = std::min<uint64_t>(lc.regex_match_limit, UINT32_MAX);  // PCRE2 takes 32 bits
      pcre2_set_match_limit(mctx_, static_cast<uint32_t>(limit));
    }
  }
  ~Engine() {
    pcre2_match_data_free(md_);
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(mctx_);
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // PCRE2's return code; the offsets are in ovector() until the next exec.
  int exec(const Regex& re, std::string_view subj, size_t pos) {
    if (!re.code) return PCRE2_ERROR_NULL;
    uint32_t need = re.ncaptures + 1;
    if (!md_ || md_pairs_ < need) {
      pcre2_match_data_free(md_);
      md_ = pcre2_match_data_create(need, nullptr);
      md_pairs_ = md_ ? need : 0;
      if (!md_) return PCRE2_ERROR_NOMEMORY;
    }
    auto s = reinterpret_cast<PCRE2_SPTR>(subj.data());
    uint32_t opts = re.opts.no_utf_check ? PCRE2_NO_UTF_CHECK : 0;
    if (re.opts.dfa) {
      int rc = pcre2_dfa_match(re.code, s, subj.size(), pos, opts, md_, mctx_, dfa_ws_, kDfaWorkspace);
      return rc == 0 ? 1 : rc;  // 0: more matches than pairs; the first (longest) is there
    }
    return pcre2_match(re.code, s, subj.size(), pos, opts, md_, mctx_);
  }
  const PCRE2_SIZE* ovector() const { return pcre2_get_ovector_pointer(md_); }

  // May one more compile-once regex be cached? The first refusal logs
  // OpenResty's warning; later ones are silent.
  bool admit() {
    if (cached_ < max_entries_) {
      cached_++;
      return true;
    }
    if (!warned_) {
      warned_ = true;
      core::ErrorLog::write(LogLevel::kWarn, 0, "lua exceeding regex cache max entries (%llu)",
                            static_cast<unsigned long long>(max_entries_));
    }
    return false;
  }
  bool cacheEmpty() const { return cached_ == 0; }

  bool setJitStackSize(size_t size) {
    if (size < kMinJitStack) size = kMinJitStack;
    pcre2_jit_stack* stack = pcre2_jit_stack_create(kMinJitStack, size, nullptr);
    if (!stack) return false;
    pcre2_jit_stack_free(jit_stack_);
    jit_stack_ = stack;
    pcre2_jit_stack_assign(mctx_, nullptr, jit_stack_);
    return true;
  }

 private:
  uint64_t max_entries_;
  uint64_t cached_ = 0;
  bool warned_ = false;
  pcre2_match_context* mctx_ = nullptr;
  pcre2_jit_stack* jit_stack_ = nullptr;
  pcre2_match_data* md_ = nullptr;
  uint32_t md_pairs_ = 0;
  int dfa_ws_[kDfaWorkspace];
};

template <typename T>
int gcUserdata(lua_State* L) {
  static_cast<T*>(lua_touserdata(L, 1))->~T();
  return 0;
}

// Upvalues of every API closure: 1 the Engine userdata, 2 the cache table.
Engine& engineOf(lua_State* L) { return *static_cast<Engine*>(lua_touserdata(L, lua_upvalueindex(1))); }
constexpr int kCacheIdx = lua_upvalueindex(2);

// Reads the name table of a fresh pattern into re->names.
void readNames(Regex* re) {
  uint32_t count = 0, entry = 0;
  PCRE2_SPTR table = nullptr;
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &count);
  if (count == 0) return;
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &entry);
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &table);
  for (uint32_t i = 0; i < count; i++, table += entry) {
    // Each entry: a 2-byte big-endian group number, then the NUL-terminated name.
    uint32_t group = (static_cast<uint32_t>(table[0]) << 8) | table[1];
    re->names.push_back({group, reinterpret_cast<const char*>(table + 2)});
  }
}

// OpenResty's text: pcre2_compile() failed: <why> in "<pattern>"[ at "<rest>"].
// Stack: [] -> [message]
void pushCompileError(lua_State* L, std::string_view pattern, int errcode, size_t erroff) {
  PCRE2_UCHAR why[256];
  pcre2_get_error_message(errcode, why, sizeof(why));
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "pcre2_compile() failed: ");
  luaL_addstring(&b, reinterpret_cast<const char*>(why));
  luaL_addstring(&b, " in \"");
  luaL_addlstring(&b, pattern.data(), pattern.size());
  luaL_addchar(&b, '"');
  if (erroff < pattern.size()) {
    luaL_addstring(&b, " at \"");
    luaL_addlstring(&b, pattern.data() + erroff, strnlen(pattern.data() + erroff, pattern.size() - erroff));
    luaL_addchar(&b, '"');
  }
  luaL_pushresult(&b);
}

// Compiles `pattern`, or takes it from the cache with the o flag.
// Stack: [] -> [regex userdata] and returns it; or [error text] and nullptr.
Regex* compileRegex(lua_State* L, std::string_view pattern, std::string_view opts_text, const ReOptions& o) {
  if (o.once) {
    lua_pushlstring(L, pattern.data(), pattern.size());
    lua_pushlstring(L, "", 1);
    lua_pushlstring(L, opts_text.data(), opts_text.size());
    lua_concat(L, 3);  // Stack: [key]
    lua_pushvalue(L, -1);
    lua_rawget(L, kCacheIdx);  // Stack: [key, regex or nil]
    if (!lua_isnil(L, -1)) {
      lua_remove(L, -2);
      return static_cast<Regex*>(lua_touserdata(L, -1));
    }
    lua_pop(L, 1);  // Stack: [key]
  }
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), o.compile, &errcode,
                                   &erroff, nullptr);
  if (!code) {
    if (o.once) lua_pop(L, 1);
    pushCompileError(L, pattern, errcode, erroff);
    return nullptr;
  }
  if (o.jit && !o.dfa) {
    int rc = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    if (rc != 0) {
      core::ErrorLog::write(LogLevel::kInfo, 0, "pcre2_jit_compile() failed: %d in \"%.*s\", ignored", rc,
                            static_cast<int>(pattern.size()), pattern.data());
    }
  }
  auto* re = new (lua_newuserdata(L, sizeof(Regex))) Regex();
  luaL_getmetatable(L, kRegexMeta);
  lua_setmetatable(L, -2);
  re->code = code;
  re->opts = o;
  if (!o.dfa) pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &re->ncaptures);
  readNames(re);
  if (o.once) {  // Stack: [key, regex]
    if (engineOf(L).admit()) {
      re->cached = true;
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, kCacheIdx);
    }
    lua_remove(L, -2);
  }
  return re;
}

// Stack: [..., captures table] -> unchanged; sets m.name for each named group.
// With D, a name's value is an array of the groups that matched under it.
void setNamedCaptures(lua_State* L, const Regex& re, bool reused) {
  int t = lua_gettop(L);
  if (re.opts.dupnames && reused) {
    for (const auto& n : re.names) {
      lua_pushlstring(L, n.name.data(), n.name.size());
      lua_pushnil(L);
      lua_rawset(L, t);
    }
  }
  for (const auto& n : re.names) {
    lua_pushlstring(L, n.name.data(), n.name.size());
    lua_rawgeti(L, t, static_cast<int>(n.group));  // Stack: [t, name, value]
    if (!re.opts.dupnames) {
      lua_rawset(L, t);
      continue;
    }
    if (!lua_isstring(L, -1)) {  // unmatched groups are left out of the array
      lua_pop(L, 2);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_rawget(L, t);  // Stack: [t, name, value, array or nil]
    if (lua_istable(L, -1)) {
      lua_insert(L, -2);
      lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
      lua_pop(L, 2);
    } else {
      lua_pop(L, 1);
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_rawset(L, t);
    }
  }
}

// Builds the captures table (m[0], m[1].., names; false for unmatched groups)
// from the last exec, into the table at res_idx when that is a table.
// Stack: [...] -> [..., m]
void pushCaptures(lua_State* L, const Regex& re, std::string_view subj, int rc, int res_idx) {
  bool reused = res_idx != 0 && lua_istable(L, res_idx);
  if (reused) lua_pushvalue(L, res_idx);
  else lua_createtable(L, static_cast<int>(re.ncaptures), static_cast<int>(re.names.size()) + 1);
  const PCRE2_SIZE* ov = engineOf(L).ovector();
  for (uint32_t i = 0; i <= re.ncaptures; i++) {
    if (static_cast<int>(i) < rc && ov[2 * i] != PCRE2_UNSET) {
      lua_pushlstring(L, subj.data() + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
    } else {
      lua_pushboolean(L, 0);
    }
    lua_rawseti(L, -2, static_cast<int>(i));
  }
  if (!re.names.empty() && !re.opts.dfa) setNamedCaptures(L, re, reused);
}

// The arguments every function shares. Trivially destructible.
struct Call {
  std::string_view subj;
  std::string_view pattern;
  std::string_view opts_text;
  ReOptions opts;
};

// The subject is tostring()'d as in lua-resty-core. Raises on a bad
// options string. Stack: index 1 is replaced by the subject string.
Call checkCall(lua_State* L, int opts_idx) {
  if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER) {
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_replace(L, 1);
  }
  Call c;
  size_t len = 0;
  const char* s = lua_tolstring(L, 1, &len);
  c.subj = std::string_view(s ? s : "", s ? len : 0);
  s = luaL_checklstring(L, 2, &len);
  c.pattern = std::string_view(s, len);
  s = luaL_optlstring(L, opts_idx, "", &len);
  c.opts_text = std::string_view(s, len);
  char bad = 0;
  if (!parseOptions(c.opts_text, &c.opts, &bad)) {
    luaL_error(L, "unknown flag \"%c\" (flags \"%s\")", bad, s);
  }
  return c;
}

// ctx.pos (1-based) as a 0-based offset; 0 without a ctx or pos.
size_t ctxStart(lua_State* L, int ctx_idx) {
  if (lua_isnoneornil(L, ctx_idx)) return 0;
  luaL_checktype(L, ctx_idx, LUA_TTABLE);
  lua_getfield(L, ctx_idx, "pos");
  lua_Number pos = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return pos <= 0 ? 0 : static_cast<size_t>(pos) - 1;
}

// ctx.pos = the 1-based position after the match.
void setCtxPos(lua_State* L, int ctx_idx, size_t end) {
  if (lua_isnoneornil(L, ctx_idx)) return;
  lua_pushnumber(L, static_cast<lua_Number>(end) + 1);
  lua_setfield(L, ctx_idx, "pos");
}

// Pushes `nils` nils then "pcre_exec() failed: <rc>". Returns the count.
int pushExecError(lua_State* L, int rc, int nils) {
  for (int i = 0; i < nils; i++) lua_pushnil(L);
  lua_pushfstring(L, "pcre_exec() failed: %d", rc);
  return nils + 1;
}

// After a failed compile: Stack: [.., err] -> [.., nil.., err]; returns the count.
int compileFailed(lua_State* L, int nils) {
  for (int i = 0; i < nils; i++) {
    lua_pushnil(L);
    lua_insert(L, -2);
  }
  return nils + 1;
}

// captures, err = ngx.re.match(subject, regex, options?, ctx?, res_table?)
int reMatch(lua_State* L) {
  lua_settop(L, 5);  // fixed argument slots: pushes below land above them
  Call c = checkCall(L, 3);
  size_t start = ctxStart(L, 4);
  Regex* re = compileRegex(L, c.pattern, c.opts_text, c.opts);
  if (!re) return compileFailed(L, 1);
  int rc = engineOf(L).exec(*re, c.subj, start);
  if (rc < 0) {
    re->releaseIfUncached();
    if (rc == PCRE2_ERROR_NOMATCH) {
      lua_pushnil(L);
      return 1;
    }
    return pushExecError(L, rc, 1);
  }
  size_t end = engineOf(L).ovector()[1];
  pushCaptures(L, *re, c.subj, rc, 5);
  re->releaseIfUncached();
  setCtxPos(L, 4, end);
  return 1;
}

// from, to, err = ngx.re.find(subject, regex, options?, ctx?, nth?)
int reFind(lua_State* L) {
  lua_settop(L, 5);
  Call c = checkCall(L, 3);
  size_t start = ctxStart(L, 4);
  lua_Integer nth = luaL_optinteger(L, 5, 0);
  if (nth < 0) nth = 0;
  Regex* re = compileRegex(L, c.pattern, c.opts_text, c.opts);
  if (!re) return compileFailed(L, 2);
  int rc = engineOf(L).exec(*re, c.subj, start);
  uint32_t ncaptures = re->ncaptures;
  re->releaseIfUncached();
  if (rc == PCRE2_ERROR_NOMATCH) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return pushExecError(L, rc, 2);
  const PCRE2_SIZE* ov = engineOf(L).ovector();
  setCtxPos(L, 4, ov[1]);
  if (nth > ncaptures) {
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushliteral(L, "nth out of bound");
    return 3;
  }
  if (nth >= rc || ov[2 * nth] == PCRE2_UNSET) {
    lua_pushnil(L);
    lua_pushnil(L);
    return 2;
  }
  lua_pushnumber(L, static_cast<lua_Number>(ov[2 * nth]) + 1);
  lua_pushnumber(L, static_cast<lua_Number>(ov[2 * nth + 1]));
  return 2;
}

// The gmatch iterator. Upvalues: 1 engine, 2 cache, 3 regex, 4 subject,
// 5 the next 0-based offset (nil once exhausted).
int gmatchIterate(lua_State* L) {
  if (lua_isnil(L, lua_upvalueindex(5))) {
    lua_pushnil(L);
    return 1;
  }
  auto* re = static_cast<Regex*>(lua_touserdata(L, lua_upvalueindex(3)));
  size_t len = 0;
  const char* s = lua_tolstring(L, lua_upvalueindex(4), &len);
  std::string_view subj(s, len);
  auto pos = static_cast<size_t>(lua_tonumber(L, lua_upvalueindex(5)));
  int rc = engineOf(L).exec(*re, subj, pos);
  if (rc < 0) {
    re->releaseIfUncached();
    lua_pushnil(L);
    lua_replace(L, lua_upvalueindex(5));
    if (rc == PCRE2_ERROR_NOMATCH) {
      lua_pushnil(L);
      return 1;
    }
    return pushExecError(L, rc, 1);
  }
  const PCRE2_SIZE* ov = engineOf(L).ovector();
  size_t next = ov[1] == ov[0] ? stepPast(*re, subj, ov[1]) : ov[1];
  pushCaptures(L, *re, subj, rc, 0);
  if (next > len) {
    re->releaseIfUncached();
    lua_pushnil(L);
  } else {
    lua_pushnumber(L, static_cast<lua_Number>(next));
  }
  lua_replace(L, lua_upvalueindex(5));
  return 1;
}

// iterator, err = ngx.re.gmatch(subject, regex, options?)
int reGmatch(lua_State* L) {
  lua_settop(L, 3);
  Call c = checkCall(L, 3);
  if (!compileRegex(L, c.pattern, c.opts_text, c.opts)) return compileFailed(L, 1);
  // Stack: [.., regex]
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, -3);
  lua_pushvalue(L, 1);
  lua_pushnumber(L, 0);
  lua_pushcclosure(L, gmatchIterate, 5);
  return 1;
}

// One token of a replacement template, with lua-nginx-module's grammar:
// "$$", "$N", "${N}", "$name", "${name}"; anything else up to a '$' is text.
struct TplToken {
  enum Kind { kText, kGroup, kName, kInvalid, kUnclosed } kind;
  size_t begin, len;  // the text, or the name/number's characters
  uint32_t group;
};

TplToken nextToken(std::string_view t, size_t* i) {
  size_t p = *i;
  if (t[p] != '$') {
    size_t end = t.find('$', p);
    if (end == std::string_view::npos) end = t.size();
    *i = end;
    return {TplToken::kText, p, end - p, 0};
  }
  if (++p == t.size()) return {TplToken::kInvalid, 0, 0, 0};
  if (t[p] == '$') {
    *i = p + 1;
    return {TplToken::kText, p, 1, 0};
  }
  bool bracket = t[p] == '{';
  if (bracket && ++p == t.size()) return {TplToken::kInvalid, 0, 0, 0};
  bool number = t[p] >= '0' && t[p] <= '9';
  size_t begin = p, end = p;
  uint32_t n = 0;
  for (; p < t.size(); p++) {
    char ch = t[p];
    if (ch == '}' && bracket) {
      bracket = false;
      p++;
      break;
    }
    if (number) {
      if (ch < '0' || ch > '9') break;
      if (n < 100000) n = n * 10 + static_cast<uint32_t>(ch - '0');
    } else if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '_')) {
      break;
    }
    end = p + 1;
  }
  *i = p;
  if (bracket) return {TplToken::kUnclosed, begin, end - begin, 0};
  if (end == begin) return {TplToken::kInvalid, 0, 0, 0};
  return {number ? TplToken::kGroup : TplToken::kName, begin, end - begin, n};
}

bool hasName(const Regex& re, std::string_view name) {
  for (const auto& n : re.names) {
    if (n.name == name) return true;
  }
  return false;
}

// Logs why a template is bad, with lua-nginx-module's texts. False if it is.
bool checkTemplate(const Regex& re, std::string_view t) {
  for (size_t i = 0; i < t.size();) {
    TplToken tok = nextToken(t, &i);
    std::string_view word = t.substr(tok.begin, tok.len);
    switch (tok.kind) {
      case TplToken::kInvalid:
        core::ErrorLog::write(LogLevel::kError, 0, "lua script: invalid capturing variable name found in \"%.*s\"",
                              static_cast<int>(t.size()), t.data());
        return false;
      case TplToken::kUnclosed:
        core::ErrorLog::write(LogLevel::kError, 0, "the closing bracket in \"%.*s\" variable is missing",
                              static_cast<int>(word.size()), word.data());
        return false;
      case TplToken::kName:
        if (hasName(re, word)) break;
        core::ErrorLog::write(LogLevel::kError, 0,
                              "attempt to use named capturing variable \"%.*s\" (no such named capture)",
                              static_cast<int>(word.size()), word.data());
        return false;
      default: break;
    }
  }
  return true;
}

// Appends group `g` of the last exec ("" when unmatched or beyond the groups).
void addGroup(luaL_Buffer* b, std::string_view subj, const PCRE2_SIZE* ov, int rc, uint32_t g) {
  if (static_cast<int64_t>(g) >= rc || ov[2 * g] == PCRE2_UNSET) return;
  luaL_addlstring(b, subj.data() + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
}

// Appends the expansion of a checked template for the last exec. A name
// shared by several groups (D) stands for the first of them that matched.
void expandTemplate(luaL_Buffer* b, const Regex& re, std::string_view t, std::string_view subj, const PCRE2_SIZE* ov,
                    int rc) {
  for (size_t i = 0; i < t.size();) {
    TplToken tok = nextToken(t, &i);
    if (tok.kind == TplToken::kText) {
      luaL_addlstring(b, t.data() + tok.begin, tok.len);
    } else if (tok.kind == TplToken::kGroup) {
      if (tok.group <= re.ncaptures) addGroup(b, subj, ov, rc, tok.group);
    } else if (tok.kind == TplToken::kName) {
      std::string_view name = t.substr(tok.begin, tok.len);
      for (const auto& n : re.names) {
        if (n.name == name && n.group <= re.ncaptures && static_cast<int64_t>(n.group) < rc && ov[2 * n.group] != PCRE2_UNSET) {
          addGroup(b, subj, ov, rc, n.group);
          break;
        }
      }
    }
  }
}

// Stack: [.., value] -> [.., tostring(value)]
void toStringTop(lua_State* L) {
  if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
    lua_tostring(L, -1);
    return;
  }
  lua_getglobal(L, "tostring");
  lua_insert(L, -2);
  lua_call(L, 1, 1);
}

// newstr, n, err = ngx.re.sub/gsub(subject, regex, replace, options?)
int subHelper(lua_State* L, bool global) {
  lua_settop(L, 4);
  Call c = checkCall(L, 4);
  bool func = lua_isfunction(L, 3);
  if (!func) {
    luaL_checkany(L, 3);
    lua_pushvalue(L, 3);
    toStringTop(L);
    lua_replace(L, 3);
  }
  Regex* re = compileRegex(L, c.pattern, c.opts_text, c.opts);
  if (!re) return compileFailed(L, 2);
  size_t tlen = 0;
  const char* tpl = func ? "" : lua_tolstring(L, 3, &tlen);
  if (!func && !checkTemplate(*re, std::string_view(tpl, tlen))) {
    re->releaseIfUncached();
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushliteral(L, "failed to compile the replacement template");
    return 3;
  }
  Engine& eng = engineOf(L);
  size_t pos = 0, copied = 0;
  int count = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (pos <= c.subj.size()) {
    int rc = eng.exec(*re, c.subj, pos);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      re->releaseIfUncached();
      return pushExecError(L, rc, 2);
    }
    count++;
    // Copied now: a replacement function may run ngx.re itself.
    size_t from = eng.ovector()[0], to = eng.ovector()[1];
    luaL_addlstring(&b, c.subj.data() + copied, from - copied);
    if (func) {
      lua_pushvalue(L, 3);
      pushCaptures(L, *re, c.subj, rc, 0);
      lua_call(L, 1, 1);
      toStringTop(L);
      luaL_addvalue(&b);
    } else {
      expandTemplate(&b, *re, std::string_view(tpl, tlen), c.subj, eng.ovector(), rc);
    }
    copied = to;
    pos = to == from ? stepPast(*re, c.subj, to) : to;
    if (!global) break;
  }
  re->releaseIfUncached();
  if (count == 0) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 2;
  }
  luaL_addlstring(&b, c.subj.data() + copied, c.subj.size() - copied);
  luaL_pushresult(&b);
  lua_pushinteger(L, count);
  return 2;
}

int reSub(lua_State* L) { return subHelper(L, false); }
int reGsub(lua_State* L) { return subHelper(L, true); }

// Helpers for lua/ngx/re.lua (module "tidegate.re"; not a public API).

// regex, err = compile(regex, options?)
int helperCompile(lua_State* L) {
  lua_settop(L, 2);
  lua_pushliteral(L, "");
  lua_insert(L, 1);  // a subject placeholder, so checkCall's indexes fit
  Call c = checkCall(L, 3);
  if (!compileRegex(L, c.pattern, c.opts_text, c.opts)) return compileFailed(L, 1);
  return 1;
}

// from, to, next, capture1 = exec(regex, subject, offset): 0-based offsets,
// `to` exclusive, `next` where the following search starts; capture1 is nil
// when the first group is absent or unmatched. nil when nothing matches;
// false, err on a PCRE2 error.
int helperExec(lua_State* L) {
  auto* re = static_cast<Regex*>(luaL_checkudata(L, 1, kRegexMeta));
  size_t len = 0;
  const char* s = luaL_checklstring(L, 2, &len);
  std::string_view subj(s, len);
  auto pos = static_cast<size_t>(luaL_checknumber(L, 3));
  int rc = engineOf(L).exec(*re, subj, pos);
  if (rc == PCRE2_ERROR_NOMATCH) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "pcre_exec() failed: %d", rc);
    return 2;
  }
  const PCRE2_SIZE* ov = engineOf(L).ovector();
  lua_pushnumber(L, static_cast<lua_Number>(ov[0]));
  lua_pushnumber(L, static_cast<lua_Number>(ov[1]));
  lua_pushnumber(L, static_cast<lua_Number>(ov[1] == ov[0] ? stepPast(*re, subj, ov[1]) : ov[1]));
  if (re->ncaptures > 0 && rc > 1 && ov[2] != PCRE2_UNSET) {
    lua_pushlstring(L, s + ov[2], ov[3] - ov[2]);
  } else {
    lua_pushnil(L);
  }
  return 4;
}

// release(regex): frees a pattern the cache does not hold.
int helperRelease(lua_State* L) {
  static_cast<Regex*>(luaL_checkudata(L, 1, kRegexMeta))->releaseIfUncached();
  return 0;
}

int helperCacheEmpty(lua_State* L) {
  lua_pushboolean(L, engineOf(L).cacheEmpty());
  return 1;
}

// ok = set_jit_stack_size(bytes)
int helperSetJitStackSize(lua_State* L) {
  lua_Number size = luaL_checknumber(L, 1);
  lua_pushboolean(L, engineOf(L).setJitStackSize(size > 0 ? static_cast<size_t>(size) : 0));
  return 1;
}

// Stack: [t, engine, cache] -> [t, engine, cache] with the functions set.
void setClosures(lua_State* L, const luaL_Reg* fns) {
  for (const luaL_Reg* f = fns; f->name; f++) {
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, f->func, 2);
    lua_setfield(L, -4, f->name);
  }
}

}  // namespace

// Stack: [ngx] -> [ngx], with ngx.re set and package.loaded["tidegate.re"].
void openNgxRe(lua_State* L) {
  luaL_newmetatable(L, kRegexMeta);
  lua_pushcfunction(L, gcUserdata<Regex>);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  const conf::LuaConf& lc = Vm::from(L)->config().http.lua;
  new (lua_newuserdata(L, sizeof(Engine))) Engine(lc);
  luaL_newmetatable(L, kEngineMeta);
  lua_pushcfunction(L, gcUserdata<Engine>);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_newtable(L);  // the compile-once cache. Stack: [ngx, engine, cache]

  static const luaL_Reg kApi[] = {
      {"match", reMatch}, {"find", reFind}, {"gmatch", reGmatch}, {"sub", reSub}, {"gsub", reGsub},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 5);
  lua_insert(L, -3);  // Stack: [ngx, re, engine, cache]
  setClosures(L, kApi);

  static const luaL_Reg kHelpers[] = {
      {"compile", helperCompile}, {"exec", helperExec}, {"release", helperRelease},
      {"cache_empty", helperCacheEmpty}, {"set_jit_stack_size", helperSetJitStackSize},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 5);
  lua_insert(L, -3);  // Stack: [ngx, re, helpers, engine, cache]
  setClosures(L, kHelpers);
  lua_pop(L, 2);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "tidegate.re");
  lua_pop(L, 3);  // Stack: [ngx, re]
  lua_setfield(L, -2, "re");
}

}  // namespace tidegate::lua
