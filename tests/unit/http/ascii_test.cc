// http/ascii.h: the word-at-a-time case folding against the byte rule.
#include "http/ascii.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace tidegate::http {
namespace {

bool bytewise(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (asciiLower(a[i]) != asciiLower(b[i])) return false;
  }
  return true;
}

TEST(AsciiTest, LowerWordFoldsOnlyAsciiCapitals) {
  for (int c = 0; c < 256; c++) {
    for (int pos = 0; pos < 8; pos++) {
      // The byte among neighbours that could carry into it: 0xff and 'Z'.
      std::string s(8, pos % 2 ? '\xff' : 'Z');
      s[static_cast<size_t>(pos)] = static_cast<char>(c);
      uint64_t folded = asciiLowerWord(loadWord(s.data()));
      char out[8];
      std::memcpy(out, &folded, 8);
      for (size_t i = 0; i < 8; i++) {
        EXPECT_EQ(out[i], asciiLower(s[i])) << "byte " << c << " at " << pos << ", index " << i;
      }
    }
  }
}

TEST(AsciiTest, IequalsAgreesWithTheByteRule) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_TRUE(iequals("TRANSFER-ENCODING", "transfer-encoding"));
  EXPECT_FALSE(iequals("content-lengtH ", "content-length"));
  EXPECT_FALSE(iequals("content-lengti", "content-length"));
  EXPECT_FALSE(iequals("Content-Length", "content_length"));
  EXPECT_FALSE(iequals("x-accel-charset", "x-accel-charsef"));
  EXPECT_TRUE(iequals("", ""));
  // '@' and '[' sit beside 'A' and 'Z'; 0xc1 is 'A' with the top bit set.
  EXPECT_FALSE(iequals("abcdefgh@", "abcdefgh`"));
  EXPECT_FALSE(iequals("abcdefgh[", "abcdefgh{"));
  EXPECT_FALSE(iequals("abcdefgh\xc1", "abcdefgh\xe1"));
  std::mt19937 rng(7);
  const std::string alphabet = "aAzZ@[`{-_09\x80\xc1\xe1\xff";
  for (int round = 0; round < 200000; round++) {
    size_t n = rng() % 20;
    std::string a(n, ' '), b(n, ' ');
    for (size_t i = 0; i < n; i++) {
      a[i] = alphabet[rng() % alphabet.size()];
      b[i] = rng() % 2 ? a[i] : alphabet[rng() % alphabet.size()];
    }
    ASSERT_EQ(iequals(a, b), bytewise(a, b)) << a << " / " << b;
  }
}

// plainRun checks sixteen bytes at a time: every byte value, at every offset
// of a value long enough for two blocks and a tail, against isPlainByte.
TEST(AsciiTest, PlainRunStopsAtTheFirstByteIsPlainByteRefuses) {
  for (int b = 0; b < 256; b++) {
    char c = static_cast<char>(b);
    bool plain = (b >= 0x20 && b < 0x7f) || b == '\t';
    for (size_t at = 0; at < 40; at++) {
      std::string v(40, 'x');
      v[at] = c;
      ASSERT_EQ(plainRun(v.data(), 0, v.size()), plain ? v.size() : at) << "byte " << b << " at " << at;
      ASSERT_EQ(isPlainValue(v), plain) << "byte " << b << " at " << at;
      // From an offset, and with an end before the byte.
      ASSERT_EQ(plainRun(v.data(), 3, v.size()), plain || at < 3 ? v.size() : at) << b << " " << at;
      ASSERT_EQ(plainRun(v.data(), 0, at), at);
    }
  }
  EXPECT_TRUE(isPlainValue(""));
  EXPECT_TRUE(isPlainValue("text/html; charset=utf-8\tq=1 ~"));
}

// tokenRun's sixteen-byte step takes letters, digits and '-'; every other
// byte value, at every offset, must end the run exactly where the tchar
// table does (the rarer tchars included, which the table takes over).
TEST(AsciiTest, TokenRunStopsAtTheFirstByteThatIsNotATchar) {
  for (int b = 0; b < 256; b++) {
    char c = static_cast<char>(b);
    bool tchar = kTokenChar[static_cast<size_t>(b)];
    for (size_t at = 0; at < 40; at++) {
      std::string v = "Content-Length-0123456789-abcdefghijklmnopqrstuvwxyz";
      v[at] = c;
      ASSERT_EQ(tokenRun(v.data(), 0, v.size()), tchar ? v.size() : at) << "byte " << b << " at " << at;
      ASSERT_EQ(tokenRun(v.data(), 0, at), at);
      // A name and its colon, with the head going on after it.
      std::string field = v.substr(0, at) + ":" + v;
      ASSERT_EQ(tokenRun(field.data(), 0, field.size()), at) << "byte " << b << " at " << at;
    }
  }
  EXPECT_EQ(tokenRun("x_y.z!", 0, 6), 6u);
}

}  // namespace
}  // namespace tidegate::http
