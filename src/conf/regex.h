// A compiled PCRE2 pattern (JIT when available), shared read-only.
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct pcre2_real_code_8;

namespace tidegate::conf {

class Regex {
 public:
  // Returns nullptr and fills *err (PCRE2's message) when the pattern is invalid.
  static std::shared_ptr<const Regex> compile(const std::string& pattern, bool caseless, std::string* err);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  bool matches(std::string_view subject) const;
  // Capture `n` (0: the whole match) of the first match in *out; false if
  // there is no match or fewer captures.
  bool capture(std::string_view subject, int n, std::string* out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  pcre2_real_code_8* code_ = nullptr;
  std::string pattern_;
};

}  // namespace tidegate::conf
