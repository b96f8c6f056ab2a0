// Text with $variables compiled at load time: parts, name rules, the prefix
// families ($http_*, $arg_*...) and nginx's error texts.
#include "conf/complex_value.h"

#include <gtest/gtest.h>

#include <string>

namespace tidegate::conf {
namespace {

ComplexValue compile(std::string_view text) {
  ComplexValue cv;
  std::string err;
  EXPECT_TRUE(compileComplexValue(text, &cv, &err)) << text << ": " << err;
  return cv;
}

std::string compileError(std::string_view text) {
  ComplexValue cv;
  std::string err;
  EXPECT_FALSE(compileComplexValue(text, &cv, &err)) << text;
  return err;
}

TEST(DirectiveComplexValueTest, LiteralOnlyIsConstant) {
  ComplexValue cv = compile("plain text");
  EXPECT_TRUE(cv.isConstant());
  EXPECT_EQ(cv.constantText(), "plain text");
  EXPECT_EQ(cv.raw, "plain text");
  ComplexValue empty = compile("");
  EXPECT_TRUE(empty.isConstant());
  EXPECT_EQ(empty.constantText(), "");
}

TEST(DirectiveComplexValueTest, SplitsLiteralsAndVariables) {
  ComplexValue cv = compile("$remote_addr - ${status}x");
  ASSERT_EQ(cv.parts.size(), 4u);
  EXPECT_TRUE(cv.parts[0].is_var);
  EXPECT_EQ(cv.parts[0].var.id, VarId::kRemoteAddr);
  EXPECT_EQ(cv.parts[0].var.name, "remote_addr");
  EXPECT_FALSE(cv.parts[1].is_var);
  EXPECT_EQ(cv.parts[1].literal, " - ");
  EXPECT_EQ(cv.parts[2].var.id, VarId::kStatus);
  EXPECT_EQ(cv.parts[3].literal, "x");
  EXPECT_FALSE(cv.isConstant());
}

TEST(DirectiveComplexValueTest, NameEndsAtFirstNonNameCharacter) {
  ComplexValue cv = compile("/$uri.bak?$args");
  ASSERT_EQ(cv.parts.size(), 4u);
  EXPECT_EQ(cv.parts[0].literal, "/");
  EXPECT_EQ(cv.parts[1].var.id, VarId::kUri);
  EXPECT_EQ(cv.parts[2].literal, ".bak?");
  EXPECT_EQ(cv.parts[3].var.id, VarId::kArgs);
}

TEST(DirectiveComplexValueTest, AdjacentVariables) {
  ComplexValue cv = compile("$scheme$host");
  ASSERT_EQ(cv.parts.size(), 2u);
  EXPECT_EQ(cv.parts[0].var.id, VarId::kScheme);
  EXPECT_EQ(cv.parts[1].var.id, VarId::kHost);
}

TEST(DirectiveComplexValueTest, BracesAllowTextRightAfterTheName) {
  ComplexValue cv = compile("${host}_suffix");
  ASSERT_EQ(cv.parts.size(), 2u);
  EXPECT_EQ(cv.parts[0].var.id, VarId::kHost);
  EXPECT_EQ(cv.parts[1].literal, "_suffix");
}

TEST(DirectiveComplexValueTest, Aliases) {
  VarRef ref;
  ASSERT_TRUE(lookupVariable("document_uri", &ref));
  EXPECT_EQ(ref.id, VarId::kUri);
  ASSERT_TRUE(lookupVariable("query_string", &ref));
  EXPECT_EQ(ref.id, VarId::kArgs);
  ASSERT_TRUE(lookupVariable("nginx_version", &ref));
  EXPECT_EQ(ref.id, VarId::kTidegateVersion);
}

TEST(DirectiveComplexValueTest, EveryFixedVariableResolves) {
  for (std::string_view name :
       {"remote_addr", "remote_port", "remote_user", "time_local", "time_iso8601", "msec", "request",
        "request_method", "request_uri", "uri", "args", "is_args", "status", "body_bytes_sent", "bytes_sent",
        "request_time", "request_length", "host", "hostname", "server_name", "server_port", "server_addr",
        "server_protocol", "scheme", "https", "connection", "connection_requests", "pid", "content_length",
        "content_type", "tidegate_version"}) {
    VarRef ref;
    EXPECT_TRUE(lookupVariable(name, &ref)) << name;
    EXPECT_EQ(ref.name, name);
  }
}

TEST(DirectiveComplexValueTest, HeaderFamiliesNormaliseTheName) {
  VarRef ref;
  ASSERT_TRUE(lookupVariable("http_X_Forwarded_For", &ref));
  EXPECT_EQ(ref.id, VarId::kHttpHeader);
  EXPECT_EQ(ref.param, "x-forwarded-for");
  EXPECT_EQ(ref.name, "http_X_Forwarded_For");
  ASSERT_TRUE(lookupVariable("sent_http_content_type", &ref));
  EXPECT_EQ(ref.id, VarId::kSentHttpHeader);
  EXPECT_EQ(ref.param, "content-type");
}

TEST(DirectiveComplexValueTest, ArgAndCookieKeepTheName) {
  VarRef ref;
  ASSERT_TRUE(lookupVariable("arg_Page_Size", &ref));
  EXPECT_EQ(ref.id, VarId::kArg);
  EXPECT_EQ(ref.param, "Page_Size");
  ASSERT_TRUE(lookupVariable("cookie_session_id", &ref));
  EXPECT_EQ(ref.id, VarId::kCookie);
  EXPECT_EQ(ref.param, "session_id");
}

TEST(DirectiveComplexValueTest, BarePrefixIsNotAVariable) {
  VarRef ref;
  EXPECT_FALSE(lookupVariable("http_", &ref));
  EXPECT_FALSE(lookupVariable("arg_", &ref));
  EXPECT_FALSE(lookupVariable("nope", &ref));
  EXPECT_FALSE(lookupVariable("", &ref));
}

TEST(DirectiveComplexValueTest, Errors) {
  EXPECT_EQ(compileError("a $nope b"), "unknown \"nope\" variable");
  EXPECT_EQ(compileError("${nope}"), "unknown \"nope\" variable");
  EXPECT_EQ(compileError("cost 5$"), "invalid variable name in \"cost 5$\"");
  EXPECT_EQ(compileError("$ x"), "invalid variable name in \"$ x\"");
  EXPECT_EQ(compileError("${}"), "invalid variable name in \"${}\"");
  EXPECT_EQ(compileError("x${host"), "the closing bracket in \"host\" variable is missing");
}

}  // namespace
}  // namespace tidegate::conf
