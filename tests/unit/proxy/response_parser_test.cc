// Upstream response framing (RELIABILITY.md "Upstream response framing").
// Every sample is fed whole, split at every byte offset and byte by byte,
// the way reads arrive on an upstream socket: the outcome must not depend
// on how the bytes arrive.
#include "proxy/response_parser.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace tidegate::proxy {
namespace {

using Event = ResponseParser::Event;
using Fields = std::vector<std::pair<std::string, std::string>>;

struct Options {
  bool head_request = false;
  bool upgrade_requested = false;
  size_t head_max = 4096;
};

struct Outcome {
  std::string events;  // one letter per event: H(ead), D(one), E(rror)
  std::string error;
  std::string body;
  int status = 0;
  Fields headers;
  int64_t content_length = -1;
  bool chunked = false;
  bool keep_alive = false;
  bool upgrade = false;
  bool until_close = false;
  size_t end = 0;        // offset right after the head (H) or the message (D)
  bool eof_ok = false;   // finishOnEof() once every byte was fed without kDone
  bool operator==(const Outcome&) const = default;
};

void PrintTo(const Outcome& o, std::ostream* os) {
  *os << "events=" << o.events << " error=\"" << o.error << "\" body=\"" << o.body << "\" status=" << o.status
      << " end=" << o.end << " eof_ok=" << o.eof_ok;
}

// Feeds `input` in pieces ending at `cuts`, each piece in a buffer of its
// own (so a view that outlives its read shows up under ASan).
// `used_llhttp`, if given, says whether llhttp parsed the (last) head.
Outcome run(const std::string& input, const std::vector<size_t>& cuts, const Options& opt = {},
            bool* used_llhttp = nullptr) {
  ResponseParser p;
  struct Report {
    ResponseParser& p;
    bool* out;
    ~Report() {
      if (out) *out = p.usedLlhttp();
    }
  } report{p, used_llhttp};
  p.reset(opt.head_request, opt.upgrade_requested, opt.head_max);
  Outcome out;
  p.onBody([&](std::string_view d) { out.body.append(d); });
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  size_t fed = 0;
  for (size_t end : ends) {
    std::string piece = input.substr(fed, end - fed);
    size_t pos = 0;
    for (;;) {
      size_t consumed = 0;
      Event ev = p.execute(piece.data() + pos, piece.size() - pos, &consumed);
      pos += consumed;
      if (ev == Event::kNeedMore) break;
      if (ev == Event::kError) {
        out.events += 'E';
        out.error = p.errorText();
        return out;
      }
      out.events += ev == Event::kHead ? 'H' : 'D';
      out.end = fed + pos;
      if (ev == Event::kHead) {
        const ResponseHead& h = p.head();
        out.status = h.status;
        out.headers = h.headers;
        out.content_length = h.content_length;
        out.chunked = h.chunked;
        out.keep_alive = h.keep_alive;
        out.upgrade = h.upgrade;
        out.until_close = p.bodyUntilClose();
        if (h.upgrade) return out;
      } else {
        EXPECT_EQ(p.bodyBytes(), out.body.size());
        return out;
      }
    }
    fed = end;
  }
  out.eof_ok = p.finishOnEof();
  return out;
}

Outcome parseAllWays(const std::string& input, const Options& opt = {}) {
  Outcome whole = run(input, {}, opt);
  for (size_t i = 0; i <= input.size(); i++) {
    EXPECT_EQ(whole, run(input, {i}, opt)) << "split at " << i << " of: " << input;
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); i++) every.push_back(i);
  EXPECT_EQ(whole, run(input, every, opt)) << "byte by byte: " << input;
  return whole;
}

std::string errorOf(const std::string& input, const Options& opt = {}) {
  Outcome o = parseAllWays(input, opt);
  EXPECT_EQ(o.events.empty() ? ' ' : o.events.back(), 'E') << input;
  return o.error;
}

bool startsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

TEST(ResponseParser, ContentLengthBodyExactlyAndExcessLeftOver) {
  std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n";
  Outcome o = parseAllWays(resp);
  EXPECT_EQ(o.events, "HD");
  EXPECT_EQ(o.error, "");
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(o.content_length, 5);
  EXPECT_TRUE(o.keep_alive);
  EXPECT_EQ(o.body, "hello");
  EXPECT_EQ(o.end, resp.find("helloHTTP") + 5);
}

TEST(ResponseParser, HeadStopsBeforeBody) {
  ResponseParser p;
  p.reset(false, false, 4096);
  std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
  std::string body;
  p.onBody([&](std::string_view d) {
    EXPECT_GE(d.data(), resp.data());  // a view into the caller's buffer
    EXPECT_LE(d.data() + d.size(), resp.data() + resp.size());
    body.append(d);
  });
  size_t consumed = 0;
  ASSERT_EQ(p.execute(resp.data(), resp.size(), &consumed), Event::kHead);
  EXPECT_EQ(consumed, resp.size() - 3);
  EXPECT_TRUE(p.headDone());
  EXPECT_FALSE(p.messageDone());
  EXPECT_EQ(body, "");
  EXPECT_TRUE(p.head().has_body());
  size_t rest = 0;
  ASSERT_EQ(p.execute(resp.data() + consumed, 3, &rest), Event::kDone);
  EXPECT_EQ(rest, 3u);
  EXPECT_EQ(body, "abc");
  EXPECT_EQ(p.bodyBytes(), 3u);
  EXPECT_TRUE(p.messageDone());
}

TEST(ResponseParser, HeaderFieldsRawInOrderTrimmed) {
  Outcome o = parseAllWays(
      "HTTP/1.1 404 Not  Found\r\nX-Upper-Case: \t a b \t\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n"
      "X-Empty:\r\nX-Blank:   \r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(o.events, "HD");
  EXPECT_EQ(o.status, 404);
  Fields want = {{"X-Upper-Case", "a b"}, {"set-cookie", "a=1"}, {"Set-Cookie", "b=2"},
                 {"X-Empty", ""},         {"X-Blank", ""},      {"Content-Length", "0"}};
  EXPECT_EQ(o.headers, want);
  ResponseParser p;
  p.reset(false, false, 4096);
  std::string resp = "HTTP/1.0 404 Not  Found\r\n\r\n";
  size_t consumed = 0;
  ASSERT_EQ(p.execute(resp.data(), resp.size(), &consumed), Event::kHead);
  EXPECT_EQ(p.head().reason, "Not  Found");
  EXPECT_EQ(p.head().http_minor, 0);
}

TEST(ResponseParser, ChunkedBodyWithoutFraming) {
  std::string resp =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\nA\r\n 012345678\r\n0\r\nX-Trailer: 1\r\nContent-Length: 9\r\n\r\nextra";
  Outcome o = parseAllWays(resp);
  EXPECT_EQ(o.events, "HD");
  EXPECT_TRUE(o.chunked);
  EXPECT_EQ(o.content_length, -1);
  EXPECT_EQ(o.body, "hello 012345678");
  EXPECT_EQ(o.headers, (Fields{{"Transfer-Encoding", "chunked"}}));  // trailers dropped
  EXPECT_TRUE(o.keep_alive);
  EXPECT_EQ(o.end, resp.size() - 5);
  std::string empty = "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n";
  EXPECT_EQ(parseAllWays(empty).end, empty.size());
}

TEST(ResponseParser, ChunkedFramingErrors) {
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const char* body : {"x\r\n", "5\r\nhelloX\r\n", "5\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n", "-1\r\n",
                           "ffffffffffffffffff\r\nx", "5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n"}) {
    EXPECT_TRUE(startsWith(errorOf(head + body), "upstream sent invalid chunked response")) << body;
  }
}

TEST(ResponseParser, BodyUntilClose) {
  Outcome o = parseAllWays("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nall of this");
  EXPECT_EQ(o.events, "H");
  EXPECT_TRUE(o.until_close);
  EXPECT_FALSE(o.keep_alive);
  EXPECT_EQ(o.body, "all of this");
  EXPECT_TRUE(o.eof_ok);
  Outcome empty = parseAllWays("HTTP/1.0 200 OK\r\n\r\n");
  EXPECT_TRUE(empty.until_close);
  EXPECT_TRUE(empty.eof_ok);
}

TEST(ResponseParser, TruncatedMessagesFailOnEof) {
  for (const char* resp : {"", "HTTP/1.1 200", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
                           "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell",
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"}) {
    Outcome o = parseAllWays(resp);
    EXPECT_EQ(o.events.find('D'), std::string::npos) << resp;
    EXPECT_EQ(o.error, "") << resp;
    EXPECT_FALSE(o.eof_ok) << resp;
  }
}

TEST(ResponseParser, KeepAliveFromVersionAndConnection) {
  auto keep = [](const std::string& line, const std::string& fields) {
    return parseAllWays(line + "\r\n" + fields + "Content-Length: 0\r\n\r\n").keep_alive;
  };
  EXPECT_TRUE(keep("HTTP/1.1 200 OK", ""));
  EXPECT_FALSE(keep("HTTP/1.1 200 OK", "Connection: close\r\n"));
  EXPECT_FALSE(keep("HTTP/1.1 200 OK", "Connection: Close\r\n"));
  EXPECT_FALSE(keep("HTTP/1.0 200 OK", ""));
  EXPECT_TRUE(keep("HTTP/1.0 200 OK", "Connection: keep-alive\r\n"));
  EXPECT_FALSE(keep("HTTP/1.0 200 OK", "Connection: keep-alive\r\nConnection: close\r\n"));
  Outcome chunked10 = parseAllWays(
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n");
  EXPECT_EQ(chunked10.body, "x");
  EXPECT_FALSE(chunked10.keep_alive);
}

TEST(ResponseParser, InterimResponsesSkipped) {
  std::string resp =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 3\r\n\r\n"
      "HTTP/1.0 102 Processing\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  Outcome o = parseAllWays(resp);
  EXPECT_EQ(o.events, "HD");
  EXPECT_EQ(o.status, 201);
  EXPECT_EQ(o.headers, (Fields{{"Content-Length", "2"}}));
  EXPECT_EQ(o.body, "ok");
  EXPECT_EQ(o.end, resp.size());
  // An interim response alone is not a response.
  Outcome only = parseAllWays("HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_EQ(only.events, "");
  EXPECT_FALSE(only.eof_ok);
}

TEST(ResponseParser, SwitchingProtocols) {
  std::string resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
  EXPECT_TRUE(startsWith(errorOf(resp), "upstream sent \"101 Switching Protocols\""));
  Outcome o = parseAllWays(resp, {.upgrade_requested = true});
  EXPECT_EQ(o.events, "H");
  EXPECT_TRUE(o.upgrade);
  EXPECT_FALSE(o.keep_alive);
  EXPECT_EQ(o.body, "");
  EXPECT_EQ(o.end, resp.find('\x81'));

  ResponseParser p;
  p.reset(false, true, 4096);
  size_t consumed = 0;
  ASSERT_EQ(p.execute(resp.data(), resp.size(), &consumed), Event::kHead);
  EXPECT_TRUE(p.messageDone());
  EXPECT_EQ(p.execute(resp.data() + consumed, resp.size() - consumed, &consumed), Event::kError);
  EXPECT_EQ(consumed, 0u);
}

TEST(ResponseParser, BodylessResponses) {
  struct Case {
    const char* resp;
    bool head_request;
  };
  for (const Case& c : {Case{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true},
                        Case{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true},
                        Case{"HTTP/1.1 200 OK\r\n\r\nclose-delimited?", true},
                        Case{"HTTP/1.1 204 No Content\r\n\r\nexcess", false},
                        Case{"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", false},
                        Case{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nexcess", false}}) {
    std::string resp = c.resp;
    Outcome o = parseAllWays(resp, {.head_request = c.head_request});
    EXPECT_EQ(o.events, "HD") << resp;
    EXPECT_EQ(o.body, "") << resp;
    EXPECT_FALSE(o.until_close) << resp;
    EXPECT_TRUE(o.keep_alive) << resp;
    EXPECT_EQ(o.end, resp.find("\r\n\r\n") + 4) << resp;
  }
  // The caller's view: kHead, then kDone at once without consuming.
  ResponseParser p;
  p.reset(false, false, 4096);
  std::string resp = "HTTP/1.1 204 No Content\r\n\r\nexcess";
  size_t consumed = 0;
  ASSERT_EQ(p.execute(resp.data(), resp.size(), &consumed), Event::kHead);
  EXPECT_TRUE(p.messageDone());
  EXPECT_FALSE(p.head().has_body());
  size_t rest = 1;
  EXPECT_EQ(p.execute(resp.data() + consumed, 0, &rest), Event::kDone);
  EXPECT_EQ(rest, 0u);
  EXPECT_TRUE(p.finishOnEof());
  // A 204 that announces a body anyway costs the connection.
  EXPECT_FALSE(parseAllWays("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello").keep_alive);
}

TEST(ResponseParser, FramingConflicts) {
  const std::string both = "upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time";
  EXPECT_EQ(errorOf("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), both);
  EXPECT_EQ(errorOf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), both);
  EXPECT_EQ(errorOf("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
            "upstream sent duplicate header line: \"Content-Length: 6\", previous value: \"Content-Length: 5\"");
  EXPECT_EQ(errorOf("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            both);
  Outcome same = parseAllWays("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length:  5 \r\n\r\nhello!");
  EXPECT_EQ(same.events, "HD");
  EXPECT_EQ(same.content_length, 5);
  EXPECT_EQ(same.body, "hello");
}

TEST(ResponseParser, TransferEncodingOtherThanChunked) {
  for (const char* te : {"gzip", "gzip, chunked", "chunked, gzip", "identity", "chunked;q=1", "chunked, chunked"}) {
    std::string resp = std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: ") + te + "\r\n\r\n0\r\n\r\n";
    EXPECT_TRUE(startsWith(errorOf(resp), "upstream sent unknown \"Transfer-Encoding\"")) << te;
  }
  EXPECT_TRUE(startsWith(
      errorOf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      "upstream sent duplicate header line: \"Transfer-Encoding: chunked\""));
}

TEST(ResponseParser, InvalidContentLength) {
  for (const char* cl : {"abc", "-1", "+5", "0x5", "5 5", "5, 5", "", "18446744073709551616", "9223372036854775808"}) {
    std::string resp = std::string("HTTP/1.1 200 OK\r\nContent-Length: ") + cl + "\r\n\r\nhello";
    EXPECT_TRUE(startsWith(errorOf(resp), "upstream sent invalid \"Content-Length\" header")) << cl;
  }
  Outcome max = parseAllWays("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n");
  EXPECT_EQ(max.content_length, 9223372036854775807);
}

TEST(ResponseParser, BadStatusLines) {
  for (const char* resp : {"<html>hello</html>\r\n\r\n", "hello world\r\n\r\n", "HTTP/1.1\r\n\r\n",
                           "HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.2 200 OK\r\n\r\n", "HTTP/0.9 200 OK\r\n\r\n",
                           "HTTP/1.1 099 Low\r\n\r\n", "HTTP/1.1 1000 High\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n",
                           "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "http/1.1 200 OK\r\n\r\n"}) {
    EXPECT_TRUE(startsWith(errorOf(resp), "upstream sent no valid HTTP/1.0 header")) << resp;
  }
  EXPECT_EQ(parseAllWays("HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n").status, 599);
}

TEST(ResponseParser, BadHeaderLines) {
  for (const char* line : {"X-A: 1\r\n folded", "X-A: 1\r\n\tfolded", "X-A:\r\n folded", "No colon here",
                           "X-A : 1", ": empty", "X A: 1", "X-A: a\rb", "X-A: a\x01" "b", "X-A: 1\n"}) {
    std::string resp = std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n") + line + "\r\n\r\n";
    EXPECT_TRUE(startsWith(errorOf(resp), "upstream sent invalid header")) << line;
  }
  // A first field line that looks folded.
  EXPECT_TRUE(startsWith(errorOf("HTTP/1.1 200 OK\r\n X: 1\r\n\r\n"), "upstream sent invalid header"));
  // Bytes around the head that only look like a fold.
  EXPECT_EQ(parseAllWays("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n x").body, " x");
  EXPECT_EQ(errorOf("HTTP/1.1 100 Continue\r\n\r\n HTTP/1.1 200 OK\r\n\r\n"),
            "upstream sent no valid HTTP/1.0 header (obsolete line folding)");
}

TEST(ResponseParser, ErrorsAtTheSameByteWhateverTheReads) {
  // llhttp's objection comes first in the bytes, so it wins over the fold
  // and the size limit that follow, even in one read.
  for (const char* line : {"X-A\x01: 1\r\n folded", "Content-Length: x\r\nX-Pad: 0123456789012345678901234567890"}) {
    std::string resp = std::string("HTTP/1.1 200 OK\r\n") + line + "\r\n\r\n";
    EXPECT_TRUE(startsWith(errorOf(resp, {.head_max = 60}), "upstream sent invalid")) << line;
  }
}

TEST(ResponseParser, TooBigHeader) {
  std::string resp = "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(100, 'p') + "\r\n\r\nbody";
  size_t head = resp.size() - 4;
  Outcome fits = parseAllWays(resp, {.head_max = head});
  EXPECT_EQ(fits.events, "H");
  EXPECT_EQ(fits.body, "body");
  Outcome over = parseAllWays(resp, {.head_max = head - 1});
  EXPECT_EQ(over.events, "E");
  EXPECT_EQ(over.error, "upstream sent too big header");
  // Never completing counts as well, in small reads or one.
  std::string endless = "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(9000, 'p');
  std::vector<size_t> cuts;
  for (size_t i = 7; i < endless.size(); i += 7) cuts.push_back(i);
  EXPECT_EQ(run(endless, cuts).error, "upstream sent too big header");
  EXPECT_EQ(run(endless, {}).error, "upstream sent too big header");
  // Interim heads count towards the same buffer.
  std::string interim = "HTTP/1.1 100 Continue\r\n\r\n" + resp;
  EXPECT_EQ(parseAllWays(interim, {.head_max = head}).error, "upstream sent too big header");
  EXPECT_EQ(parseAllWays(interim, {.head_max = head + 25}).events, "H");
}

TEST(ResponseParser, ResetReusesParserOnKeepaliveConnection) {
  ResponseParser p;
  std::string body;
  p.onBody([&](std::string_view d) { body.append(d); });
  std::string first = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: a-value-too-long-for-sso\r\nContent-Length: 2\r\n\r\nhi";
  std::string second = "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n";
  std::string third = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  for (int round = 0; round < 3; round++) {
    size_t consumed = 0;
    p.reset(false, false, 4096);
    ASSERT_EQ(p.execute(first.data(), first.size(), &consumed), Event::kHead);
    const auto* fields = p.head().headers.data();
    ASSERT_EQ(p.execute(first.data() + consumed, first.size() - consumed, &consumed), Event::kDone);
    EXPECT_EQ(p.head().headers.size(), 4u);
    EXPECT_EQ(p.head().headers[2].second, "a-value-too-long-for-sso");

    p.reset(false, false, 4096);
    ASSERT_EQ(p.execute(second.data(), second.size(), &consumed), Event::kHead);
    EXPECT_EQ(p.head().headers.data(), fields);  // same storage, no new vector
    EXPECT_EQ(p.head().status, 302);
    EXPECT_EQ(p.head().reason, "Found");
    EXPECT_EQ(p.head().headers, (Fields{{"Location", "/x"}, {"Content-Length", "0"}}));
    EXPECT_EQ(p.head().content_length, 0);
    EXPECT_EQ(p.execute(second.data() + consumed, 0, &consumed), Event::kDone);

    p.reset(false, false, 4096);
    ASSERT_EQ(p.execute(third.data(), third.size(), &consumed), Event::kHead);
    EXPECT_EQ(p.bodyBytes(), 0u);
    ASSERT_EQ(p.execute(third.data() + consumed, third.size() - consumed, &consumed), Event::kDone);
    EXPECT_EQ(p.bodyBytes(), 3u);
    EXPECT_TRUE(p.head().chunked);
    EXPECT_EQ(p.head().content_length, -1);
  }
  EXPECT_EQ(body, "hiabchiabchiabc");
  // An error does not stick either.
  std::string bad = "HTTP/9.9 200 OK\r\n\r\n";
  size_t consumed = 0;
  p.reset(false, false, 4096);
  EXPECT_EQ(p.execute(bad.data(), bad.size(), &consumed), Event::kError);
  EXPECT_EQ(p.execute(first.data(), first.size(), &consumed), Event::kError);
  p.reset(false, false, 4096);
  EXPECT_EQ(p.errorText(), "");
  EXPECT_EQ(p.execute(first.data(), first.size(), &consumed), Event::kHead);
}

// The proxy hands a head's fields to the request ($upstream_http_*) and
// gets the request's old vector back: the next head fills those strings,
// through llhttp (cut heads) and takeSimpleHead (whole ones) alike.
TEST(ResponseParser, SwapHeadersHandsOverTheFieldsAndReusesTheVectorGiven) {
  const std::string head = "HTTP/1.1 200 OK\r\nX-First: a-value-too-long-for-sso\r\nContent-Length: 0\r\n\r\n";
  const std::string next = "HTTP/1.1 204 No Content\r\nX-Next: another-long-value-not-in-sso\r\n\r\n";
  for (bool whole : {true, false}) {
    SCOPED_TRACE(whole ? "whole" : "cut after the status line");
    ResponseParser p;
    auto feed = [&](const std::string& bytes) {
      size_t cut = whole ? 0 : bytes.find('\n') + 1;
      size_t consumed = 0;
      p.reset(false, false, 4096);
      if (cut > 0) ASSERT_EQ(p.execute(bytes.data(), cut, &consumed), Event::kNeedMore);
      ASSERT_EQ(p.execute(bytes.data() + cut, bytes.size() - cut, &consumed), Event::kHead);
      EXPECT_EQ(p.usedLlhttp(), !whole);
    };
    Fields record = {{"Old-Name", std::string(64, 'o')}, {"Old-2", "x"}};
    const char* old_value = record[0].second.data();
    size_t record_bytes = 64;

    feed(head);
    p.swapHeaders(record, record_bytes);
    EXPECT_EQ(record, (Fields{{"X-First", "a-value-too-long-for-sso"}, {"Content-Length", "0"}}));
    EXPECT_TRUE(p.head().headers.empty());  // the head keeps none
    size_t strings = 0;
    for (const auto& [name, value] : record) strings += name.capacity() + value.capacity();
    EXPECT_EQ(record_bytes, strings);  // what the fields handed over hold

    feed(next);
    EXPECT_EQ(p.head().headers, (Fields{{"X-Next", "another-long-value-not-in-sso"}}));
    EXPECT_EQ(p.head().headers[0].second.data(), old_value);  // the given string's buffer, filled again
    EXPECT_EQ(record[0].second, "a-value-too-long-for-sso");   // untouched by the next head
  }
}

// What the proxy checks before it keeps a parser for the next request.
TEST(ResponseParser, KeptBytesCountsTheFieldStringsItHolds) {
  ResponseParser p;
  const size_t empty = p.keptBytes();
  const std::string big = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(20000, 'b') + "\r\nContent-Length: 0\r\n\r\n";
  size_t consumed = 0;
  p.reset(false, false, 65536);
  ASSERT_EQ(p.execute(big.data(), big.size(), &consumed), Event::kHead);
  EXPECT_GE(p.keptBytes(), empty + 20000);
  Fields record;
  size_t record_bytes = 0;
  p.swapHeaders(record, record_bytes);  // the strings went to the record: the parser keeps none of them
  EXPECT_LT(p.keptBytes(), 1000u);
  EXPECT_GE(record_bytes, 20000u);
  p.swapHeaders(record, record_bytes);  // and back, as a cleared record hands them over again
  EXPECT_GE(p.keptBytes(), 20000u);
  EXPECT_EQ(record_bytes, 0u);
}

// The strings a record hands back are counted as the record says, not read
// again (with a thousand connections they are cold by then); a head left
// incomplete is counted by reading its strings.
TEST(ResponseParser, KeptBytesTakesTheRecordsCountAndReadsAnIncompleteHead) {
  ResponseParser p;
  size_t consumed = 0;
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  p.reset(false, false, 65536);
  ASSERT_EQ(p.execute(head.data(), head.size(), &consumed), Event::kHead);
  Fields record = {{"X-Old", "v"}};
  size_t said = 50000;  // more than those strings hold: only the count can say it
  p.swapHeaders(record, said);
  EXPECT_GE(p.keptBytes(), 50000u);

  p.reset(false, false, 65536);  // the next response's head fills that vector's strings
  const std::string cut = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(30000, 'b');
  ASSERT_EQ(p.execute(cut.data(), cut.size(), &consumed), Event::kNeedMore);
  size_t kept = p.keptBytes();
  EXPECT_GE(kept, 30000u);
  EXPECT_LT(kept, 50000u);  // the record's count no longer applies: the strings were counted
}

// A head that arrives whole skips llhttp when it is plain enough
// (ResponseParser::takeSimpleHead); cut after the status line, llhttp
// parses it. Both must say the same of every head: events, error text,
// status, fields, framing, keep-alive, body and where it ends.
TEST(ResponseParser, SimpleHeadsAgreeWithLlhttp) {
  const std::vector<std::string> lines = {
      "HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified",
      "HTTP/1.1 404 ", "HTTP/1.1 200", "HTTP/1.1 200 \tOK\t", "HTTP/1.1 999 Odd", "HTTP/1.1 099 Low",
      "HTTP/1.1 100 Continue", "HTTP/1.1 101 Switching Protocols", "HTTP/1.2 200 OK", "HTTP/2.0 200 OK",
      "HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1  200 OK", "http/1.1 200 OK", "HTTP/1.1 200 O\x80K",
      "HTTP/1.1 200 O\x01K", "HTTP/1.1 502 Bad Gateway"};
  const std::vector<std::string> fields = {
      "", "Content-Length: 5\r\n", "Content-Length: 0\r\n", "Content-Length:5\r\n",
      "Content-Length:  5 \t\r\n", "Content-Length: 5\r\nContent-Length: 5\r\n",
      "Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length: +5\r\n", "Content-Length: 5 5\r\n",
      "Content-Length: 005\r\n", "Content-Length: 99999999999999999999\r\n", "Content-Length: \r\n",
      "content-length: 5\r\nConnection: close\r\n", "Content-Length: 5\r\nConnection: keep-alive\r\n",
      "Content-Length: 5\r\nConnection: Keep-Alive, close\r\n", "Content-Length: 5\r\nConnection: upgrade\r\n",
      "Content-Length: 5\r\nConnection: foo\r\n", "Content-Length: 5\r\nConnection: keep-alive,\r\n",
      "Connection: keep-alive\r\n", "Transfer-Encoding: chunked\r\n",
      "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "Content-Length: 5\r\nUpgrade: h2c\r\n",
      "Content-Length: 5\r\nProxy-Connection: close\r\n", "Content-Length: 5\r\nX-A: \r\n",
      "Content-Length: 5\r\nX-A:\tv\t\r\n", "X-A: v\x7f\r\nContent-Length: 5\r\n",
      "X-A: v\x80\r\nContent-Length: 5\r\n", "X-A: v\x01\r\nContent-Length: 5\r\n",
      "X A: v\r\nContent-Length: 5\r\n", "X-A : v\r\nContent-Length: 5\r\n", ": v\r\nContent-Length: 5\r\n",
      "no colon\r\nContent-Length: 5\r\n", "Content-Length: 5\r\nX-A: v\r\n folded\r\n",
      "X-A: a\rb\r\nContent-Length: 5\r\n", "X-A: a\nb\r\nContent-Length: 5\r\n",
      "Server: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 17:40:01 GMT\r\nContent-Type: text/plain\r\n"
      "Content-Length: 5\r\nConnection: keep-alive\r\n"};
  const std::vector<Options> options = {{}, {.head_request = true}, {.head_max = 60}};
  int simple = 0;
  for (const std::string& line : lines) {
    for (const std::string& f : fields) {
      for (const char* body : {"", "hello", "hello!extra"}) {
        for (const Options& opt : options) {
          std::string resp = line + "\r\n" + f + "\r\n" + body;
          bool whole_llhttp = true, cut_llhttp = false;
          Outcome whole = run(resp, {}, opt, &whole_llhttp);
          Outcome cut = run(resp, {line.size() + 2}, opt, &cut_llhttp);
          EXPECT_TRUE(cut_llhttp) << resp;
          if (!whole_llhttp) simple++;
          EXPECT_EQ(whole, cut) << resp << " (head_request " << opt.head_request << ", head_max " << opt.head_max
                                << ")";
        }
      }
    }
  }
  // The comparison means something only if plenty of heads took the short way.
  EXPECT_GT(simple, 300);
}

// Every well-formed sample above and a few more, fed whole, split at every
// offset and byte by byte: the events, head, body and end must agree.
TEST(ResponseParser, EverySplitGivesTheSameResult) {
  const std::vector<std::pair<std::string, Options>> samples = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: v\r\n\r\nhello world", {}},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x;q=\"a;b\"\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n", {}},
      {"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end", {}},
      {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", {}},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nframes", {.upgrade_requested = true}},
      {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", {.head_request = true}},
      {"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", {}},
      {"HTTP/1.1 200 OK\r\nX-Pad: " + std::string(40, 'p') + "\r\n\r\n", {.head_max = 60}},
      {"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", {}},
      {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", {}},
  };
  for (const auto& [resp, opt] : samples) {
    Outcome o = parseAllWays(resp, opt);
    EXPECT_FALSE(o.events.empty()) << resp;
  }
}

}  // namespace
}  // namespace tidegate::proxy
