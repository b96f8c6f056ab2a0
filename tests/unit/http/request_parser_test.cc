// Request framing and smuggling vectors from RELIABILITY.md, each fed whole
// and split at every byte offset: the answer must not depend on how the
// bytes arrive.
#include "http/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tidegate::http {
namespace {

struct Outcome {
  int status = 0;             // 0: no error
  int messages = 0;           // complete messages parsed
  uint64_t body = 0;          // body bytes of the last message
  std::string body_data;
  bool operator==(const Outcome& o) const {
    return status == o.status && messages == o.messages && body == o.body && body_data == o.body_data;
  }
};

class Collector : public RequestParser::Handler {
 public:
  int onHeadComplete(std::string*) override { return head_status; }
  void onBodyData(std::string_view d) override { data.append(d); }
  int head_status = 0;
  std::string data;
};

// Feeds `input` in the given pieces, the way a connection does: one growing
// buffer, the parser restarted after each message.
Outcome run(const std::string& input, const std::vector<size_t>& cuts, uint64_t max_body = 0) {
  RequestParser p;
  Collector c;
  conf::HeadLimits limits;
  p.reset(limits, max_body);
  p.setHandler(&c);
  std::string buf;
  size_t start = 0, parsed = 0;
  Outcome out;
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  size_t fed = 0;
  for (size_t end : ends) {
    buf.append(input, fed, end - fed);
    fed = end;
    while (parsed < buf.size()) {
      size_t consumed = 0;
      auto ev = p.execute(buf.data() + start, parsed - start, buf.size() - start, &consumed);
      parsed += consumed;
      if (ev == RequestParser::Event::kError) {
        out.status = p.errorStatus();
        return out;
      }
      if (ev == RequestParser::Event::kNeedMore) break;
      out.messages++;
      out.body = p.bodyBytes();
      out.body_data = c.data;
      c.data.clear();
      start = parsed;
      p.reset(limits, max_body);
    }
  }
  return out;
}

// Whole, then split at every offset: all runs must agree.
Outcome parseAllWays(const std::string& input, uint64_t max_body = 0) {
  Outcome whole = run(input, {}, max_body);
  for (size_t i = 1; i < input.size(); i++) {
    Outcome split = run(input, {i}, max_body);
    EXPECT_EQ(whole.status, split.status) << "split at " << i << " of: " << input;
    EXPECT_EQ(whole.messages, split.messages) << "split at " << i << " of: " << input;
    EXPECT_EQ(whole.body_data, split.body_data) << "split at " << i;
  }
  // One byte at a time too.
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); i++) every.push_back(i);
  Outcome bytes = run(input, every, max_body);
  EXPECT_EQ(whole.status, bytes.status) << "byte by byte: " << input;
  EXPECT_EQ(whole.messages, bytes.messages) << "byte by byte: " << input;
  return whole;
}

int statusOf(const std::string& input) { return parseAllWays(input).status; }

// The request line's faults and, when a line has several, which one is
// reported: no first space, the method, no second space, the version, the
// target (the scanner checks each part while looking for its space).
TEST(RequestParser, RequestLineFaultsAreReportedInOrder) {
  auto text = [](const std::string& line) {
    RequestParser p;
    conf::HeadLimits limits;
    p.reset(limits, 0);
    std::string in = line + "\r\nHost: a\r\n\r\n";
    size_t consumed = 0;
    auto ev = p.execute(in.data(), 0, in.size(), &consumed);
    EXPECT_EQ(ev, RequestParser::Event::kError) << line;
    EXPECT_EQ(p.errorStatus(), 400) << line;
    return p.errorText();
  };
  EXPECT_EQ(text("GeT"), "client sent invalid request line");
  EXPECT_EQ(text(" / HTTP/1.1"), "client sent invalid request line");
  EXPECT_EQ(text("GeT / HTTP/1.1"), "client sent invalid method");
  EXPECT_EQ(text("GeT /#x"), "client sent invalid method");
  EXPECT_EQ(text("GET /#x"), "client sent invalid request line");
  EXPECT_EQ(text("GET  / HTTP/1.1"), "client sent invalid request line");
  EXPECT_EQ(text("GET /#x HTTP/1"), "client sent invalid request line");
  EXPECT_EQ(text("GET /#x HTTP/1.1"), "client sent invalid character in request target");
  EXPECT_EQ(text("GET /a\x7f HTTP/1.1"), "client sent invalid character in request target");
  EXPECT_EQ(text("GET /a\tb HTTP/1.1"), "client sent invalid character in request target");
}

TEST(RequestParser, SimpleGet) {
  Outcome o = parseAllWays("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.messages, 1);
}

TEST(RequestParser, HeadFields) {
  RequestParser p;
  conf::HeadLimits limits;
  p.reset(limits, 0);
  std::string req = "POST /x?a=1 HTTP/1.1\r\nHost: example.com\r\nX-A:  v1 \r\nContent-Length: 3\r\n\r\nabc";
  size_t consumed = 0;
  ASSERT_EQ(p.execute(req.data(), 0, req.size(), &consumed), RequestParser::Event::kMessageComplete);
  const RequestHead& h = p.head();
  EXPECT_EQ(h.method.in(req.data()), "POST");
  EXPECT_EQ(h.target.in(req.data()), "/x?a=1");
  EXPECT_EQ(h.request_line.in(req.data()), "POST /x?a=1 HTTP/1.1");
  ASSERT_EQ(h.headers.size(), 3u);
  EXPECT_EQ(h.headers[1].name.in(req.data()), "X-A");
  EXPECT_EQ(h.headers[1].value.in(req.data()), "v1");
  EXPECT_EQ(h.content_length, 3);
  EXPECT_EQ(h.host_index, 0);
  EXPECT_EQ(p.bodyBytes(), 3u);
  EXPECT_EQ(consumed, req.size());
}

TEST(RequestParser, PipelinedRequestsInOrderWithExactBodies) {
  Outcome o = parseAllWays(
      "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
      "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
      "GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.messages, 3);
}

TEST(RequestParser, ChunkedBodyDecoded) {
  Outcome o = parseAllWays("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.messages, 1);
  EXPECT_EQ(o.body_data, "hello world");
}

TEST(RequestParser, Http10) {
  EXPECT_EQ(statusOf("GET / HTTP/1.0\r\n\r\n"), 0);
}

// --- heads that skip llhttp (RequestParser::takeSimpleHead) ------------------------------

// One message parsed with its head in one piece (a simple head needs no
// llhttp) or cut just after the request line (llhttp sees the head).
struct HeadOutcome {
  RequestParser::Event event;
  int status;
  size_t consumed;
  bool used_llhttp;
  int minor;
  bool keep_alive, is_head, upgrade, chunked;
  int64_t content_length;
  size_t fields;
  int host;
  std::string describe() const {
    return "event " + std::to_string(static_cast<int>(event)) + " status " + std::to_string(status) + " consumed " +
           std::to_string(consumed) + " minor " + std::to_string(minor) + " keep_alive " + std::to_string(keep_alive) +
           " head " + std::to_string(is_head) + " upgrade " + std::to_string(upgrade) + " chunked " +
           std::to_string(chunked) + " length " + std::to_string(content_length) + " fields " +
           std::to_string(fields) + " host " + std::to_string(host);
  }
};

HeadOutcome parseHead(const std::string& input, bool cut_after_request_line) {
  RequestParser p;
  conf::HeadLimits limits;
  p.reset(limits, 0);
  size_t line = input.find_first_not_of("\r\n");  // empty lines before it are allowed
  size_t cut = cut_after_request_line ? input.find("\r\n", line) + 2 : input.size();
  size_t consumed = 0, parsed = 0;
  RequestParser::Event ev = RequestParser::Event::kNeedMore;
  for (size_t end : {cut, input.size()}) {
    if (end <= parsed) continue;
    ev = p.execute(input.data(), parsed, end, &consumed);
    parsed += consumed;
    if (ev != RequestParser::Event::kNeedMore) break;
  }
  const RequestHead& h = p.head();
  return HeadOutcome{ev, p.errorStatus(), parsed, p.usedLlhttp(), h.http_minor, h.keep_alive, h.is_head, h.upgrade,
                     h.chunked, h.content_length, h.headers.size(), h.host_index};
}

TEST(RequestParserSimpleHead, AgreesWithLlhttpOnEveryHead) {
  const std::vector<std::string> lines = {
      "GET / HTTP/1.1", "HEAD / HTTP/1.1", "GET / HTTP/1.0", "HEAD /x HTTP/1.0", "POST / HTTP/1.1",
      "OPTIONS * HTTP/1.1", "DELETE /a HTTP/1.1", "get / HTTP/1.1", "GET /a?b=c&d=%41 HTTP/1.1",
      "GET /~u/a.b-c_d!$&'()*+,;=:@ HTTP/1.1", "GET /a#f HTTP/1.1", "GET /a\"b HTTP/1.1", "GET /<x> HTTP/1.1",
      "GET /a|b HTTP/1.1", "GET /{x} HTTP/1.1", "GET /a\\b HTTP/1.1", "GET /a^b HTTP/1.1", "GET /`x` HTTP/1.1",
      "GET /\x80 HTTP/1.1", "GET http://a/ HTTP/1.1", "GET a HTTP/1.1", "GET / HTTP/2.0", "GET / HTTP/1.2",
      "GET / HTTP/0.9", "GET / HTTP/1.1 ", "GET  / HTTP/1.1", "FOO / HTTP/1.1"};
  const std::vector<std::string> fields = {
      "", "Host: a\r\n", "Host: a\r\nHost: b\r\n", "Host: a\r\nConnection: close\r\n",
      "Host: a\r\nConnection: keep-alive\r\n", "Host: a\r\nConnection: Keep-Alive, close\r\n",
      "Host: a\r\nConnection:  close \r\n", "Host: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n",
      "Host: a\r\nConnection: keep-alive,\r\n", "Host: a\r\nConnection: foo\r\n", "Host: a\r\nUpgrade: h2c\r\n",
      "Host: a\r\nContent-Length: 0\r\n", "Host: a\r\nContent-Length: 3\r\n", "Host: a\r\nExpect: 100-continue\r\n",
      "Host: a\r\nTransfer-Encoding: chunked\r\n", "Host: a\r\nX-A: \r\n", "Host: a\r\nX-A:\tv\t\r\n",
      "Host: a\r\nX-A: v\x7f\r\n", "Host: a\r\nX-A: v\x80\r\n", "Host: a\r\nX-A: v\x01\r\n",
      "Host: a\r\nX A: v\r\n", "Host: a\r\nX-A : v\r\n", "Host: a\r\nX(A): v\r\n", "Host: a\r\n: v\r\n",
      "Host: a\r\nno colon\r\n", "Host: a/b\r\n", "Host: a\r\nX-A: v\r\n folded\r\n",
      "Host: a\r\nUser-Agent: wrk\r\nAccept: */*\r\n"};
  int simple = 0;
  for (const std::string& line : lines) {
    for (const std::string& f : fields) {
      for (const char* body : {"", "abc", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"}) {
        // With and without an empty line before the request line (allowed).
        std::string req = (f == "Host: a\r\n" && body[0] == 'a' ? "\r\n" : "") + line + "\r\n" + f + "\r\n" + body;
        HeadOutcome whole = parseHead(req, false);
        HeadOutcome cut = parseHead(req, true);
        EXPECT_TRUE(cut.used_llhttp || cut.status != 0) << req;
        if (!whole.used_llhttp) simple++;
        if (whole.status != 0 || cut.status != 0) {
          EXPECT_EQ(whole.status, cut.status) << req;
          continue;
        }
        EXPECT_EQ(whole.describe(), cut.describe()) << req;
      }
    }
  }
  // The comparison means something only if plenty of heads took the short way.
  EXPECT_GT(simple, 100);
}

// --- RELIABILITY.md "Request framing" -------------------------------------------------

TEST(RequestParserSmuggling, ContentLengthAndTransferEncoding) {
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"), 400);
}

TEST(RequestParserSmuggling, BadContentLength) {
  for (const char* cl : {"Content-Length: 5\r\nContent-Length: 5", "Content-Length: 5, 5", "Content-Length: +5",
                         "Content-Length: -1", "Content-Length: 0x5", "Content-Length: ",
                         "Content-Length: 18446744073709551616", "Content-Length: 5 5", "Content-Length: 5\r\nContent-Length: 6"}) {
    std::string req = std::string("POST / HTTP/1.1\r\nHost: a\r\n") + cl + "\r\n\r\nhello";
    EXPECT_EQ(statusOf(req), 400) << cl;
  }
}

TEST(RequestParserSmuggling, BadTransferEncoding) {
  for (const char* te : {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked, gzip",
                         "Transfer-Encoding: chunkedchunked", "Transfer-Encoding: chunked;x=1",
                         "Transfer-Encoding: chunked, chunked", "Transfer-Encoding: ,chunked"}) {
    std::string req = std::string("POST / HTTP/1.1\r\nHost: a\r\n") + te + "\r\n\r\n0\r\n\r\n";
    EXPECT_EQ(statusOf(req), 400) << te;
  }
}

TEST(RequestParserSmuggling, UnknownCodingIs501) {
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501);
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"), 501);
}

TEST(RequestParserSmuggling, HeaderSyntax) {
  for (const char* h : {"X-A : 1", "X-A\t: 1", "X-A: 1\r\n folded", "X-A: 1\r\n\tfolded", "X-A: a\rb",
                        ": empty", "X A: 1", "X-A: a\x01" "b", "X-\"A: 1", "X-A(: 1", "X-A: a\x7f"}) {
    std::string req = std::string("GET / HTTP/1.1\r\nHost: a\r\n") + h + "\r\n\r\n";
    EXPECT_EQ(statusOf(req), 400) << h;
  }
  std::string nul = std::string("GET / HTTP/1.1\r\nHost: a\r\nX-A: a") + '\0' + "b\r\n\r\n";
  EXPECT_EQ(statusOf(nul), 400);
}

TEST(RequestParserSmuggling, LineEndings) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400);
}

TEST(RequestParserSmuggling, HostRules) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
}

TEST(RequestParserSmuggling, ChunkedOnHttp10) {
  EXPECT_EQ(statusOf("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
}

TEST(RequestParserSmuggling, RequestLine) {
  for (const char* line : {"GET  / HTTP/1.1", "get / HTTP/1.1", "GET / HTTP/1.1 extra", "GET /a b HTTP/1.1",
                           "GET /a#frag HTTP/1.1", "GET /\x01 HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1",
                           "GET HTTP/1.1", "GET / http/1.1", "GET / HTTP/1", "GET a HTTP/1.1"}) {
    std::string req = std::string(line) + "\r\nHost: a\r\n\r\n";
    EXPECT_EQ(statusOf(req), 400) << line;
  }
}

TEST(RequestParserSmuggling, UnsupportedVersions) {
  EXPECT_EQ(statusOf("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
  EXPECT_EQ(statusOf("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
  EXPECT_EQ(statusOf("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505);
}

TEST(RequestParserSmuggling, ChunkFraming) {
  const std::string head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const char* body : {"ffffffffffffffffff\r\n", "-1\r\n", " 5\r\nhello\r\n0\r\n\r\n",
                           "5 \r\nhello\r\n0\r\n\r\n", "3\r\nhello\r\n0\r\n\r\n", "5;a=b\nhello\r\n0\r\n\r\n",
                           "5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "x\r\n", "5\r\nhelloX\r\n"}) {
    EXPECT_EQ(statusOf(head + body), 400) << body;
  }
  std::string big_ext = head + "5;" + std::string(5000, 'a') + "\r\nhello\r\n0\r\n\r\n";
  EXPECT_EQ(run(big_ext, {}).status, 400);
}

TEST(RequestParserSmuggling, TrailersNeverMergeFramingHeaders) {
  RequestParser p;
  conf::HeadLimits limits;
  p.reset(limits, 0);
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                    "Content-Length: 50\r\nHost: evil\r\n\r\n";
  size_t consumed = 0;
  ASSERT_EQ(p.execute(req.data(), 0, req.size(), &consumed), RequestParser::Event::kMessageComplete);
  EXPECT_EQ(p.head().headers.size(), 2u);
  EXPECT_TRUE(p.head().chunked);
  EXPECT_EQ(p.head().headers[p.head().host_index].value.in(req.data()), "a");
  EXPECT_EQ(p.head().content_length, -1);
  // A Transfer-Encoding in the trailers is refused outright.
  EXPECT_EQ(statusOf("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                     "Transfer-Encoding: gzip\r\n\r\n"),
            400);
}

TEST(RequestParserSmuggling, IncompleteChunkedBodyNeverCompletes) {
  Outcome o = parseAllWays("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.messages, 0);
}

// --- RELIABILITY.md "Limits" -------------------------------------------------------

TEST(RequestParserLimits, LongRequestLineIs414) {
  std::string req = "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  EXPECT_EQ(run(req, {}).status, 414);
  EXPECT_EQ(run(req, {100, 5000}).status, 414);
}

TEST(RequestParserLimits, LongHeaderIs431) {
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n";
  EXPECT_EQ(run(req, {}).status, 431);
}

TEST(RequestParserLimits, TotalHeadIs431) {
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 8; i++) req += "X-H" + std::to_string(i) + ": " + std::string(5000, 'b') + "\r\n";
  req += "\r\n";
  EXPECT_EQ(run(req, {}).status, 431);
}

TEST(RequestParserLimits, TooManyFieldsIs431) {
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 101; i++) req += "X-" + std::to_string(i) + ": v\r\n";
  req += "\r\n";
  EXPECT_EQ(run(req, {}).status, 431);
  std::string ok = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 99; i++) ok += "X-" + std::to_string(i) + ": v\r\n";
  ok += "\r\n";
  EXPECT_EQ(run(ok, {}).status, 0);
}

TEST(RequestParserLimits, DeclaredBodyTooLargeIs413BeforeReading) {
  EXPECT_EQ(run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", {}, 10).status, 413);
  EXPECT_EQ(run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", {}, 10).status, 0);
}

TEST(RequestParserLimits, ChunkedBodyCrossingLimitIs413) {
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n";
  EXPECT_EQ(parseAllWays(req, 10).status, 413);
  EXPECT_EQ(parseAllWays(req, 12).status, 0);
}

TEST(RequestParserLimits, HandlerCanReject) {
  RequestParser p;
  Collector c;
  c.head_status = 403;
  conf::HeadLimits limits;
  p.reset(limits, 0);
  p.setHandler(&c);
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  size_t consumed = 0;
  EXPECT_EQ(p.execute(req.data(), 0, req.size(), &consumed), RequestParser::Event::kError);
  EXPECT_EQ(p.errorStatus(), 403);
}

}  // namespace
}  // namespace tidegate::http
