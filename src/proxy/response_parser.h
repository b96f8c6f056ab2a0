// Strict parsing of one upstream HTTP/1.x response at a time: llhttp (strict
// mode) plus the checks it leaves to us (RELIABILITY.md "Upstream response
// framing"). Anything whose framing is ambiguous is an error that the proxy
// answers with 502; nothing is normalised.
//
// A parser serves one exchange at a time (the proxy keeps them between
// requests, see ExchangeBuffers). Per response: reset(), then
// execute() on each read until kHead (the caller builds the downstream
// head), then execute() again until kDone. Body bytes reach the body
// callback as views into the caller's buffer, never copied. Only the head's
// fields are copied (into strings whose capacity is kept across reset()).
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tidegate::proxy {

struct ResponseHead {
  int status = 0;
  int http_minor = 1;  // HTTP/1.x
  std::string reason;
  // Owned copies as received, in order: names in their raw case, values
  // without surrounding whitespace (RFC 9110 5.5).
  std::vector<std::pair<std::string, std::string>> headers;
  int64_t content_length = -1;  // -1: no Content-Length
  bool chunked = false;
  // The connection may carry another request after this message: HTTP/1.1
  // without "Connection: close", or HTTP/1.0 with "Connection: keep-alive";
  // never for a body delimited by close, after an upgrade, for a 204 that
  // announces a body, nor for chunked in HTTP/1.0 (RFC 9112 6.1).
  bool keep_alive = false;
  bool upgrade = false;       // a 101 to a request that asked for an upgrade
  bool head_request = false;  // the request was HEAD (as given to reset())

  // Whether body bytes follow the head (RFC 9112 6.3): never for HEAD, 1xx,
  // 204, 304 or Content-Length: 0, whatever else the headers say.
  bool has_body() const {
    return !head_request && status >= 200 && status != 204 && status != 304 && content_length != 0;
  }
};

class ResponseParser {
 public:
  enum class Event {
    kNeedMore,  // every byte consumed, the message goes on
    kHead,      // the final head is complete; *consumed stops right after it
    kDone,      // the message ended; *consumed stops at its end
    kError,     // errorText() says why; the connection must be closed
  };

  // Receives body bytes (chunk framing removed) in order. The view points
  // into the buffer given to execute() and is valid only during the call.
  // The callback runs inside execute(): it must not reset(), execute() or
  // destroy the parser. A std::function because it is set once per
  // request, not per read; empty means count the bytes and drop them.
  using BodyCallback = std::function<void(std::string_view)>;

  ResponseParser();
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Prepares for the next response on this connection. `head_request`: the
  // request was HEAD, so no body follows whatever the headers say.
  // `upgrade_requested`: the request carried Upgrade, so a 101 is valid.
  // `head_max` (proxy_buffer_size) bounds the bytes of every head received
  // for this request, interim 1xx heads included, up to and including the
  // empty line that ends the final one; like nginx's buffer, a head of
  // exactly head_max bytes fits.
  void reset(bool head_request, bool upgrade_requested, size_t head_max);
  void onBody(BodyCallback fn) { on_body_ = std::move(fn); }

  // Parses [data, data+len); *consumed is how many bytes were used.
  //   kNeedMore: all of them; feed the next read.
  //   kHead: head() is valid; body bytes after the head were not parsed.
  //     When the response has no body (!head().has_body()), messageDone()
  //     is already true and the next execute() returns kDone at once
  //     without consuming anything (any bytes there are excess).
  //   kDone: bytes after *consumed are excess: the caller must not reuse
  //     the connection if there are any.
  //   kError: errorText() has nginx's words for the log.
  // 1xx interim responses other than 101 are skipped: kHead is only ever
  // reported for the final response. After a 101 kHead the stream is a
  // tunnel: execute() is a caller bug and returns kError.
  Event execute(const char* data, size_t len, size_t* consumed);

  // The upstream closed its side. True if that ends the message cleanly
  // (its body is delimited by close, or it was already complete); false if
  // the message is truncated (in the head, short of Content-Length, or in
  // the chunked body).
  bool finishOnEof();

  bool headDone() const { return head_done_; }
  bool messageDone() const { return message_done_; }
  bool bodyUntilClose() const { return body_until_close_; }
  const ResponseHead& head() const { return head_; }
  // The head's fields, exchanged with `other` (after kHead; the head then
  // has none): the parser keeps that vector, and the capacity of its
  // strings, for the next head's fields. `other_bytes` says how much heap
  // other's strings hold (keptBytes() then counts them without reading
  // them: with many connections they are cold by then), and becomes that
  // of the fields handed over.
  void swapHeaders(std::vector<std::pair<std::string, std::string>>& other, size_t& other_bytes);
  const std::string& errorText() const { return error_text_; }
  // The heap memory the parser keeps between responses (its field strings
  // and their vectors), roughly. Reads no field string unless a head was
  // left incomplete.
  size_t keptBytes() const;
  uint64_t bodyBytes() const { return body_bytes_; }
  // Whether llhttp parsed this response (false: the head arrived whole and
  // plain, so takeSimpleHead() read it; for tests).
  bool usedLlhttp() const { return !simple_; }

 private:
  static llhttp_settings_t baseSettings();
  static const llhttp_settings_t& headSettings();
  static const llhttp_settings_t& bodySettings();
  // llhttp callbacks: noexcept trampolines into the members below.
  static int onStatus(llhttp_t* p, const char* at, size_t len) noexcept;
  static int onStatusComplete(llhttp_t* p) noexcept;
  static int onHeaderField(llhttp_t* p, const char* at, size_t len) noexcept;
  static int onHeaderFieldComplete(llhttp_t* p) noexcept;
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len) noexcept;
  static int onHeaderValueComplete(llhttp_t* p) noexcept;
  static int onHeadersComplete(llhttp_t* p) noexcept;
  static int onBodyData(llhttp_t* p, const char* at, size_t len) noexcept;
  static int onMessageComplete(llhttp_t* p) noexcept;

  enum class HeadStop : uint8_t { kNone, kHeadMax, kObsFold };

  void restartLlhttp();
  void startMessage();
  bool fail(std::string text);
  void failFromLlhttp(llhttp_errno_t rc);
  // Sets fields_bytes_ for the head just completed.
  void countFields();
  // The heap the strings of head_.headers hold: fields_bytes_, or read
  // from the strings while a head is incomplete.
  size_t headFieldBytes() const;
  void failHead(const char* why);
  size_t headRoom(const char* data, size_t len, HeadStop* why);
  bool checkStatusLine();
  bool nameComplete();
  bool checkContentLength(const std::string& name, const std::string& value);
  bool checkTransferEncoding(const std::string& name, const std::string& value);
  bool valueComplete();
  int headComplete();
  // The framing and keep-alive verdict once the final head is complete,
  // from the Connection tokens seen (RFC 9112 6.1, 6.3).
  void settleHead(bool close_token, bool keep_alive_token);
  // A whole head at the start of `data` with nothing llhttp would judge
  // differently: a status line of HTTP/1.0 or 1.1 and a final status,
  // token names, plain values, at most one Content-Length, no
  // Transfer-Encoding, Upgrade or Proxy-Connection, Connection of only
  // "keep-alive" and "close", and a body framed by its length or none.
  // Fills the head and returns its size; 0 (the head untouched) otherwise.
  size_t takeSimpleHead(const char* data, size_t len);
  bool simpleContentLength(std::string_view raw);
  // The body of a head that takeSimpleHead() read: Content-Length bytes.
  Event countBody(const char* data, size_t len, size_t* consumed);

  llhttp_t parser_;
  // parser_ is set for this response (reset() leaves that to execute(): a
  // head takeSimpleHead() reads needs no llhttp at all).
  bool llhttp_started_ = false;
  BodyCallback on_body_;
  ResponseHead head_;
  size_t head_max_ = 0;
  bool upgrade_requested_ = false;

  // Head collection. Fields [0, fields_) of head_.headers belong to the
  // head being parsed; until the head is complete the rest are kept only
  // for their strings' capacity.
  size_t fields_ = 0;
  // Given by swapHeaders(): the next head's fields go there.
  std::vector<std::pair<std::string, std::string>> spare_fields_;
  size_t spare_bytes_ = 0;  // the heap its strings hold, as swapHeaders() was told
  // The heap the strings of head_.headers hold, counted when a head is
  // complete (its strings are in cache then); npos while one is parsed.
  size_t fields_bytes_ = 0;
  size_t head_bytes_ = 0;  // every head byte since reset(), 1xx heads included
  bool in_name_ = false;    // a field name has begun and is not complete yet
  bool after_lf_ = false;   // the last head byte given to llhttp was LF
  int cl_count_ = 0;
  int te_count_ = 0;

  bool status_done_ = false;
  bool interim_ = false;  // the message being parsed is a 1xx to skip
  bool head_done_ = false;
  bool head_reported_ = false;
  bool message_done_ = false;
  bool body_until_close_ = false;
  bool failed_ = false;
  bool simple_ = false;     // takeSimpleHead() read the head; countBody() frames the body
  uint64_t body_left_ = 0;  // simple_: body bytes still to come
  uint64_t body_bytes_ = 0;
  std::string error_text_;
};

}  // namespace tidegate::proxy
