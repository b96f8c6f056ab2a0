// Strict HTTP/1.1 request parsing: llhttp (strict mode) plus the checks that
// close request-smuggling gaps llhttp leaves open (RELIABILITY.md "Request
// framing"). Ambiguous framing is an error with a status, never normalised.
//
// The caller owns one contiguous buffer per connection and feeds it in
// arrival order; the parser records offsets into it. When the head is
// complete the parser calls Handler::onHeadComplete() (routing, body limits,
// 100-continue) before any body byte is parsed; execute() stops after each
// message so pipelined requests are handled one at a time.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "http/request_head.h"

namespace tidegate::http {

class RequestParser {
 public:
  enum class Event {
    kNeedMore,         // every byte consumed, no event
    kMessageComplete,  // the whole request, body included, has been read
    kError,            // errorStatus()/errorText() say why; close after answering
  };

  class Handler {
   public:
    virtual ~Handler() = default;
    // The head is parsed and valid. Return 0 to go on, or an HTTP status
    // (with *why) to reject the request before its body is read.
    virtual int onHeadComplete(std::string* why) = 0;
    // Body bytes as they are parsed (chunk framing removed).
    virtual void onBodyData(std::string_view data) = 0;
  };

  RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Prepares for a new request. `max_body` 0 means unlimited.
  void reset(const conf::HeadLimits& limits, uint64_t max_body);
  void setHandler(Handler* handler) { handler_ = handler; }
  // The location decides the body limit once the head is routed.
  void setMaxBody(uint64_t max_body) { max_body_ = max_body; }

  // Parses bytes [base+from, base+to). *consumed tells how many were used;
  // the rest must be fed again after the event is handled. `base` may change
  // between calls (buffer growth) as long as earlier bytes keep their offsets.
  Event execute(const char* base, size_t from, size_t to, size_t* consumed);

  const RequestHead& head() const { return head_; }
  bool headDone() const { return head_done_; }
  bool requestLineDone() const { return line_no_ > 0; }
  bool messageDone() const { return message_done_; }
  uint64_t bodyBytes() const { return body_bytes_; }
  // Whether llhttp saw this message (a simple head may not need it; tests).
  bool usedLlhttp() const { return llhttp_fed_; }
  int errorStatus() const { return error_status_; }
  const std::string& errorText() const { return error_text_; }

 private:
  static const llhttp_settings_t& headSettings();
  static const llhttp_settings_t& bodySettings();
  static int onTrailer(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onChunkExtension(llhttp_t* p, const char* at, size_t len);
  static int onChunkHeader(llhttp_t* p);
  static int onMessageComplete(llhttp_t* p);

  // Byte-level checks on the head that llhttp does not make (CRLF only, no
  // obs-fold) and the size limits (414/431). Returns false on error.
  bool scanHead(const char* data, size_t len, size_t* head_end);
  bool fail(int status, std::string text);
  // llhttp_execute, after setting llhttp up for this message on first use.
  llhttp_errno_t feedLlhttp(const char* data, size_t len);
  void failFromLlhttp(llhttp_errno_t rc);
  void preferEarlierLlhttpError(size_t from);
  bool failAt(const char* at, int status, const char* text);
  bool checkFramingHeaders();
  bool checkRequestLine(std::string_view line);
  void recordField(std::string_view line);
  bool inspectField(size_t index);
  bool checkTransferEncoding(std::string_view value);
  // The checks and the routing once the head's fields are known (both ways).
  bool finishHead();
  // Sets the version, method and keep-alive fields of a head that llhttp need
  // not see (see execute()); false leaves it to llhttp.
  bool takeSimpleHead();

  const char* base_ = nullptr;
  Handler* handler_ = nullptr;
  conf::HeadLimits limits_;
  uint64_t max_body_ = 0;
  RequestHead head_;

  // Head scanner state.
  size_t head_bytes_ = 0;
  size_t scanned_ = 0;   // offset (from base) the head scanner has reached
  size_t error_at_ = 0;  // offset of the byte a scanner error is about
  size_t head_end_ = 0;  // offset just past the head's empty line, once scanned
  bool llhttp_fed_ = false;  // llhttp has seen bytes of this message
  size_t line_len_ = 0;
  size_t line_no_ = 0;
  size_t line_start_ = 0;  // offset of the current head line (request line check)
  bool prev_cr_ = false;
  bool head_scanned_ = false;

  // Header collection state.
  int cl_count_ = 0;
  int te_count_ = 0;
  int host_count_ = 0;
  int te_status_ = 0;  // 400/501 when Transfer-Encoding is bad
  bool head_done_ = false;
  bool message_done_ = false;
  uint64_t body_bytes_ = 0;
  size_t chunk_ext_len_ = 0;
  size_t trailer_bytes_ = 0;
  int error_status_ = 0;
  std::string error_text_;
  // Last: most requests never reach llhttp (see execute()), so its state
  // stays out of the cache lines every request reads.
  llhttp_t parser_{};
};

}  // namespace tidegate::http
