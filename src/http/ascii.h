// ASCII helpers for protocol text (header names, codings, field values):
// HTTP field names are case-insensitive ASCII (RFC 9110 5.1), never locale
// text. Also the character classes the parsers' llhttp-free paths accept.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tidegate::http {

inline char asciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// Eight bytes with each of 'A'..'Z' lower-cased, every other byte (obs-text
// included) as it is: a byte's low seven bits plus 0x3f (0x25) carry into
// its top bit from 'A' (from '['), and no sum carries into the next byte.
inline uint64_t asciiLowerWord(uint64_t x) {
  constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL, kTop = 0x8080808080808080ULL;
  uint64_t h = x & kLow7;
  uint64_t upper = (h + 0x3f3f3f3f3f3f3f3fULL) & ~(h + 0x2525252525252525ULL) & ~x & kTop;
  return x | (upper >> 2);
}

inline uint64_t loadWord(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// Field names are compared often (every header against a few known ones):
// eight bytes at a time from eight bytes on, the last word overlapping.
inline bool iequals(std::string_view a, std::string_view b) {
  size_t n = a.size();
  if (n != b.size()) return false;
  if (n < 8) {
    for (size_t i = 0; i < n; i++) {
      if (asciiLower(a[i]) != asciiLower(b[i])) return false;
    }
    return true;
  }
  for (size_t i = 0; i + 8 < n; i += 8) {
    if (asciiLowerWord(loadWord(a.data() + i)) != asciiLowerWord(loadWord(b.data() + i))) return false;
  }
  return asciiLowerWord(loadWord(a.data() + n - 8)) == asciiLowerWord(loadWord(b.data() + n - 8));
}

// A byte class: the characters of `extra`, plus letters and digits if `alnum`.
constexpr std::array<bool, 256> charTable(const char* extra, bool alnum) {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; c++) {
    t[static_cast<size_t>(c)] = alnum && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
  }
  for (const char* p = extra; *p; p++) t[static_cast<unsigned char>(*p)] = true;
  return t;
}

// RFC 9110 5.6.2 tchar.
inline constexpr std::array<bool, 256> kTokenChar = charTable("!#$%&'*+-.^_`|~", true);

inline bool allOf(std::string_view s, const std::array<bool, 256>& table) {
  for (char c : s) {
    if (!table[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

// The first byte at or after `i` and before `end` that is not a tchar, or
// `end`. Where SSE2 is there (every x86-64), sixteen bytes at a time while
// they are letters, digits and '-' (a field name's usual bytes; the other
// tchars go to the table), so a name and its colon take one step.
inline size_t tokenRun(const char* p, size_t i, size_t end) {
#if defined(__SSE2__)
  // Unsigned "x - lo < n" as a signed compare: both sides shifted by 0x80.
  const __m128i case_bit = _mm_set1_epi8(0x20), dash = _mm_set1_epi8('-');
  const __m128i from_a = _mm_set1_epi8(static_cast<char>(0x80 - 'a')), letters = _mm_set1_epi8(static_cast<char>(0x80 + 26));
  const __m128i from_0 = _mm_set1_epi8(static_cast<char>(0x80 - '0')), digits = _mm_set1_epi8(static_cast<char>(0x80 + 10));
  for (; i + 16 <= end; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i letter = _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(v, case_bit), from_a), letters);
    __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(v, from_0), digits);
    __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(v, dash));
    unsigned other = ~static_cast<unsigned>(_mm_movemask_epi8(ok)) & 0xffffu;
    if (other != 0) {
      i += static_cast<size_t>(__builtin_ctz(other));
      break;
    }
  }
#endif
  while (i < end && kTokenChar[static_cast<unsigned char>(p[i])]) i++;
  return i;
}

// A non-empty token (a field name, a coding).
inline bool isToken(std::string_view s) { return !s.empty() && allOf(s, kTokenChar); }

// A byte of a plain field value: printable ASCII, SP or HTAB; no obs-text,
// no control characters (so no CR or LF either).
inline bool isPlainByte(char c) {
  auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u < 0x7f) || u == '\t';
}

// The first byte at or after `i` and before `end` that is not a plain
// field value byte, or `end`; sixteen at a time where SSE2 is there (every
// x86-64).
inline size_t plainRun(const char* p, size_t i, size_t end) {
#if defined(__SSE2__)
  const __m128i below = _mm_set1_epi8(0x20 - 1), above = _mm_set1_epi8(0x7f), tab = _mm_set1_epi8('\t');
  for (; i + 16 <= end; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    // Signed compares: obs-text (0x80-0xff) is negative, so below 0x20.
    __m128i ok = _mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above)),
                              _mm_cmpeq_epi8(v, tab));
    unsigned bad = ~static_cast<unsigned>(_mm_movemask_epi8(ok)) & 0xffffu;
    if (bad != 0) return i + static_cast<size_t>(__builtin_ctz(bad));
  }
#endif
  while (i < end && isPlainByte(p[i])) i++;
  return i;
}

inline bool isPlainValue(std::string_view v) { return plainRun(v.data(), 0, v.size()) == v.size(); }

// Without leading and trailing OWS (SP and HTAB, RFC 9110 5.6.3).
inline std::string_view trimOws(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Calls fn(element) for each element of a comma-separated field value, OWS
// trimmed, empty ones included; stops and returns false when fn does.
template <typename Fn>
bool forEachListElement(std::string_view value, Fn&& fn) {
  for (size_t pos = 0; pos <= value.size();) {
    size_t comma = value.find(',', pos);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view element = trimOws(value.substr(pos, comma - pos));
    pos = comma + 1;
    if (!fn(element)) return false;
  }
  return true;
}

}  // namespace tidegate::http
