// splitTarget and normalizePath: what location matching sees must be the
// decoded, dot-free path nginx would produce (RFC 3986 section 5.2.4), so
// "/a/../admin" and "/%61dmin" cannot dodge a "location /admin" rule.
#include "http/uri.h"

#include <gtest/gtest.h>

#include <string>

namespace tidegate::http {
namespace {

std::string norm(std::string_view raw) {
  std::string out = "<unset>";
  EXPECT_TRUE(normalizePath(raw, &out)) << raw;
  return out;
}

bool rejected(std::string_view raw) {
  std::string out;
  return !normalizePath(raw, &out);
}

// --- splitTarget ------------------------------------------------------------------

TEST(UriSplitTest, OriginForm) {
  TargetParts t = splitTarget("/a/b?x=1&y=2");
  EXPECT_EQ(t.path, "/a/b");
  EXPECT_EQ(t.args, "x=1&y=2");
  EXPECT_TRUE(t.has_args);
  EXPECT_TRUE(t.authority.empty());
}

TEST(UriSplitTest, NoQuery) {
  TargetParts t = splitTarget("/plain");
  EXPECT_EQ(t.path, "/plain");
  EXPECT_FALSE(t.has_args);
  EXPECT_TRUE(t.args.empty());
}

TEST(UriSplitTest, EmptyQueryStillHasArgs) {
  TargetParts t = splitTarget("/p?");
  EXPECT_EQ(t.path, "/p");
  EXPECT_TRUE(t.has_args);
  EXPECT_EQ(t.args, "");
}

TEST(UriSplitTest, OnlyFirstQuestionMarkSplits) {
  TargetParts t = splitTarget("/p?a=?b");
  EXPECT_EQ(t.path, "/p");
  EXPECT_EQ(t.args, "a=?b");
}

TEST(UriSplitTest, AbsoluteForm) {
  TargetParts t = splitTarget("http://example.com:8080/p/q?z=1");
  EXPECT_EQ(t.authority, "example.com:8080");
  EXPECT_EQ(t.path, "/p/q");
  EXPECT_EQ(t.args, "z=1");
  TargetParts s = splitTarget("https://secure.test/x");
  EXPECT_EQ(s.authority, "secure.test");
  EXPECT_EQ(s.path, "/x");
}

TEST(UriSplitTest, AbsoluteFormWithoutPath) {
  TargetParts t = splitTarget("http://example.com");
  EXPECT_EQ(t.authority, "example.com");
  EXPECT_EQ(t.path, "/");
  EXPECT_FALSE(t.has_args);
  TargetParts q = splitTarget("http://example.com?a=1");
  EXPECT_EQ(q.authority, "example.com");
  EXPECT_EQ(q.path, "/");
  EXPECT_EQ(q.args, "a=1");
}

TEST(UriSplitTest, EmptyTargetBecomesRoot) {
  TargetParts t = splitTarget("");
  EXPECT_EQ(t.path, "/");
  TargetParts q = splitTarget("?a");
  EXPECT_EQ(q.path, "/");
  EXPECT_EQ(q.args, "a");
}

// --- normalizePath --------------------------------------------------------------------

TEST(UriNormalizeTest, AlreadyNormal) {
  EXPECT_EQ(norm("/"), "/");
  EXPECT_EQ(norm("/a/b/c"), "/a/b/c");
  EXPECT_EQ(norm("/a/b/"), "/a/b/");
}

TEST(UriNormalizeTest, PercentDecoding) {
  EXPECT_EQ(norm("/a%20b"), "/a b");
  EXPECT_EQ(norm("/%61dmin"), "/admin");
  EXPECT_EQ(norm("/%C3%A9t%c3%a9"), "/\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(norm("/100%25"), "/100%");
  EXPECT_EQ(norm("/a+b"), "/a+b");  // '+' is not a space in a path
}

TEST(UriNormalizeTest, EncodedSlashAndDotsAreNormalisedToo) {
  EXPECT_EQ(norm("/a%2Fb"), "/a/b");
  EXPECT_EQ(norm("/a/%2e/b"), "/a/b");
  EXPECT_EQ(norm("/a/b/%2E%2E/admin"), "/a/admin");
  EXPECT_EQ(norm("/a%2f..%2fadmin"), "/admin");
}

TEST(UriNormalizeTest, MergesSlashes) {
  EXPECT_EQ(norm("//a///b//"), "/a/b/");
  EXPECT_EQ(norm("//"), "/");
}

TEST(UriNormalizeTest, DotSegments) {
  EXPECT_EQ(norm("/a/./b"), "/a/b");
  EXPECT_EQ(norm("/a/b/../c"), "/a/c");
  EXPECT_EQ(norm("/a/b/.."), "/a/");
  EXPECT_EQ(norm("/a/."), "/a/");
  EXPECT_EQ(norm("/a/.."), "/");
  EXPECT_EQ(norm("/./"), "/");
  EXPECT_EQ(norm("/a/../admin"), "/admin");
  EXPECT_EQ(norm("/a/b/c/../../d"), "/a/d");
}

TEST(UriNormalizeTest, DotsThatAreNotSegmentsAreKept) {
  EXPECT_EQ(norm("/.hidden"), "/.hidden");
  EXPECT_EQ(norm("/a/..b"), "/a/..b");
  EXPECT_EQ(norm("/a/b.."), "/a/b..");
  EXPECT_EQ(norm("/.../x"), "/.../x");
}

TEST(UriNormalizeTest, DotDotAboveRootIsRejected) {
  EXPECT_TRUE(rejected("/.."));
  EXPECT_TRUE(rejected("/../etc/passwd"));
  EXPECT_TRUE(rejected("/a/../.."));
  EXPECT_TRUE(rejected("/a/b/../../../c"));
  EXPECT_TRUE(rejected("/%2e%2e/x"));
  EXPECT_TRUE(rejected("/..%2fx"));
}

TEST(UriNormalizeTest, EncodedNulIsRejected) {
  EXPECT_TRUE(rejected("/a%00b"));
  EXPECT_TRUE(rejected("/%00"));
}

TEST(UriNormalizeTest, BadEscapesAreRejected) {
  EXPECT_TRUE(rejected("/%"));
  EXPECT_TRUE(rejected("/%4"));
  EXPECT_TRUE(rejected("/a%zz"));
  EXPECT_TRUE(rejected("/a%g1"));
  EXPECT_TRUE(rejected("/a%1"));
}

TEST(UriNormalizeTest, PathMustStartWithSlash) {
  EXPECT_TRUE(rejected(""));
  EXPECT_TRUE(rejected("a/b"));
  EXPECT_TRUE(rejected("*"));
}

TEST(UriNormalizeTest, EscapeAtTheVeryEnd) {
  EXPECT_EQ(norm("/a%41"), "/aA");
  EXPECT_EQ(norm("/%41"), "/A");
}

}  // namespace
}  // namespace tidegate::http
