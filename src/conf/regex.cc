#define PCRE2_CODE_UNIT_WIDTH 8
#include "conf/regex.h"

#include <pcre2.h>

namespace tidegate::conf {

std::shared_ptr<const Regex> Regex::compile(const std::string& pattern, bool caseless, std::string* err) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  uint32_t opts = caseless ? PCRE2_CASELESS : 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts,
                                   &errcode, &erroff, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(errcode, buf, sizeof(buf));
    *err = "pcre2_compile() failed: " + std::string(reinterpret_cast<char*>(buf)) + " in \"" + pattern +
           "\" at \"" + pattern.substr(erroff < pattern.size() ? erroff : pattern.size()) + "\"";
    return nullptr;
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  std::shared_ptr<Regex> re(new Regex());
  re->code_ = code;
  re->pattern_ = pattern;
  return re;
}

Regex::~Regex() { pcre2_code_free(code_); }

bool Regex::matches(std::string_view subject) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
  int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

bool Regex::capture(std::string_view subject, int n, std::string* out) const {
  out->clear();
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
  int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0, md, nullptr);
  bool ok = rc > n;
  if (ok) {
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[2 * n] != PCRE2_UNSET) out->assign(subject.substr(ov[2 * n], ov[2 * n + 1] - ov[2 * n]));
  }
  pcre2_match_data_free(md);
  return ok;
}

}  // namespace tidegate::conf
