#include "proxy/response_parser.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "http/ascii.h"
#include "http/request.h"

namespace tidegate::proxy {
namespace {

using http::iequals;

ResponseParser* self(llhttp_t* p) { return static_cast<ResponseParser*>(p->data); }

// http::trimOws, on the string itself.
void trimOwsInPlace(std::string* v) {
  std::string_view kept = http::trimOws(*v);
  auto start = static_cast<size_t>(kept.data() - v->data());
  v->erase(start + kept.size());
  v->erase(0, start);
}

std::string duplicateLine(const std::string& name, const std::string& value, const std::string& previous) {
  return "upstream sent duplicate header line: \"" + name + ": " + value + "\", previous value: \"" + name + ": " +
         previous + "\"";
}

}  // namespace

// Two callback tables, as in the request parser. While the head is parsed
// every field is copied out; once it is complete the body table takes over,
// which has no field callbacks, so trailers are validated by llhttp and
// dropped, never merged into the head. Chunk extensions are ignored (RFC
// 9112 7.1.1); note that llhttp 8.1 refuses a token-valued extension that
// is followed by another ("5;a=b;c=d", nodejs/llhttp#248), so such a body
// fails as invalid chunked until the system llhttp is newer.
// Both tables stop execute() at the end of a message.
llhttp_settings_t ResponseParser::baseSettings() {
  llhttp_settings_t st;
  llhttp_settings_init(&st);
  st.on_message_complete = &ResponseParser::onMessageComplete;
  return st;
}

const llhttp_settings_t& ResponseParser::headSettings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st = baseSettings();
    st.on_status = &ResponseParser::onStatus;
    st.on_status_complete = &ResponseParser::onStatusComplete;
    st.on_header_field = &ResponseParser::onHeaderField;
    st.on_header_field_complete = &ResponseParser::onHeaderFieldComplete;
    st.on_header_value = &ResponseParser::onHeaderValue;
    st.on_header_value_complete = &ResponseParser::onHeaderValueComplete;
    st.on_headers_complete = &ResponseParser::onHeadersComplete;
    return st;
  }();
  return s;
}

const llhttp_settings_t& ResponseParser::bodySettings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st = baseSettings();
    st.on_body = &ResponseParser::onBodyData;
    return st;
  }();
  return s;
}

ResponseParser::ResponseParser() {
  restartLlhttp();
  head_.headers.reserve(16);
}

void ResponseParser::restartLlhttp() {
  llhttp_init(&parser_, HTTP_RESPONSE, &headSettings());
  parser_.data = this;
  llhttp_started_ = true;
}

// Per-message state: a skipped 1xx starts the next message with this too.
// The field strings are cleared, not freed (see fields_).
void ResponseParser::startMessage() {
  if (!spare_fields_.empty()) {
    head_.headers.swap(spare_fields_);
    spare_fields_.clear();
    spare_bytes_ = 0;
  }
  fields_bytes_ = std::string::npos;
  head_.status = 0;
  head_.http_minor = 1;
  head_.reason.clear();
  head_.content_length = -1;
  head_.chunked = head_.keep_alive = head_.upgrade = false;
  fields_ = 0;
  in_name_ = false;
  cl_count_ = te_count_ = 0;
  status_done_ = interim_ = false;
}

namespace {

size_t stringBytes(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t n = 0;
  for (const auto& [name, value] : fields) n += name.capacity() + value.capacity();
  return n;
}

}  // namespace

void ResponseParser::countFields() { fields_bytes_ = stringBytes(head_.headers); }

size_t ResponseParser::headFieldBytes() const {
  return fields_bytes_ != std::string::npos ? fields_bytes_ : stringBytes(head_.headers);
}

size_t ResponseParser::keptBytes() const {
  size_t n = head_.reason.capacity() + spare_bytes_;
  n += (head_.headers.capacity() + spare_fields_.capacity()) * sizeof(head_.headers[0]);
  return n + headFieldBytes();
}

void ResponseParser::swapHeaders(std::vector<std::pair<std::string, std::string>>& other, size_t& other_bytes) {
  size_t given = headFieldBytes();
  other.swap(head_.headers);
  spare_fields_.swap(head_.headers);
  head_.headers.clear();
  spare_bytes_ = other_bytes;
  other_bytes = given;
  fields_bytes_ = 0;
}

void ResponseParser::reset(bool head_request, bool upgrade_requested, size_t head_max) {
  llhttp_started_ = false;  // execute() starts it if takeSimpleHead() cannot take the head
  startMessage();
  head_.head_request = head_request;
  upgrade_requested_ = upgrade_requested;
  head_max_ = head_max;
  head_bytes_ = 0;
  after_lf_ = false;
  head_done_ = head_reported_ = message_done_ = body_until_close_ = failed_ = simple_ = false;
  body_left_ = body_bytes_ = 0;
  error_text_.clear();
}

bool ResponseParser::fail(std::string text) {
  if (!failed_) {
    failed_ = true;
    error_text_ = std::move(text);
  }
  return false;
}

// A malformed head: nginx's words differ for the status line and the fields.
void ResponseParser::failHead(const char* why) {
  fail(std::string(status_done_ ? "upstream sent invalid header (" : "upstream sent no valid HTTP/1.0 header (") +
       why + ")");
}

void ResponseParser::failFromLlhttp(llhttp_errno_t rc) {
  const char* why = llhttp_get_error_reason(&parser_);
  if (!head_done_) {
    if (rc == HPE_INVALID_CONTENT_LENGTH) {
      fail(std::string("upstream sent invalid \"Content-Length\" header (") + why + ")");
    } else {
      failHead(why);
    }
  } else if (head_.chunked) {
    fail(std::string("upstream sent invalid chunked response (") + why + ")");
  } else {
    fail(std::string("upstream sent invalid response (") + why + ")");
  }
}

// llhttp takes HTTP/0.x and 2+ and any status up to 999, even 0 from
// "HTTP/1.1  200"; we take HTTP/1.0 and 1.1 only (RFC 9112 2.3) and a
// three-digit code (RFC 9110 15) from 100.
bool ResponseParser::checkStatusLine() {
  if (parser_.http_major != 1 || parser_.http_minor > 1) {
    failHead("unsupported version");
    return false;
  }
  int status = parser_.status_code;
  if (status < 100 || status > 999) {
    failHead("invalid status");
    return false;
  }
  head_.status = status;
  head_.http_minor = parser_.http_minor;
  status_done_ = true;
  if (status == 101) {
    // RFC 9110 15.2.2: a server switches protocols only when asked to.
    if (!upgrade_requested_) return fail("upstream sent \"101 Switching Protocols\" to a request without \"Upgrade\"");
  } else if (status < 200) {
    interim_ = true;  // RFC 9110 15.2: a final response follows
  }
  return true;
}

// llhttp takes an empty field name. It also refuses any repeated
// Content-Length, but RFC 9110 8.6 lets a recipient accept identical
// copies, which we do: the flag llhttp tests when a value starts is cleared
// (with the length it accumulates into), so it parses the repeat as if it
// were the first. valueComplete() compares.
bool ResponseParser::nameComplete() {
  if (!in_name_ || head_.headers[fields_ - 1].first.empty()) {
    failHead("empty field name");
    return false;
  }
  in_name_ = false;
  if (cl_count_ > 0 && iequals(head_.headers[fields_ - 1].first, "content-length")) {
    parser_.flags &= static_cast<uint16_t>(~F_CONTENT_LENGTH);
    parser_.content_length = 0;
  }
  return true;
}

bool ResponseParser::checkContentLength(const std::string& name, const std::string& value) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t n = 0;
  for (char c : value) {
    if (c < '0' || c > '9' || n > (kMax - (c - '0')) / 10) {
      return fail("upstream sent invalid \"Content-Length\" header: \"" + name + ": " + value + "\"");
    }
    n = n * 10 + (c - '0');
  }
  if (value.empty()) return fail("upstream sent invalid \"Content-Length\" header: \"" + name + ":\"");
  if (++cl_count_ > 1 && n != head_.content_length) {
    return fail(duplicateLine(name, value, std::to_string(head_.content_length)));
  }
  head_.content_length = n;
  return true;
}

// nginx frames an upstream body by "chunked" alone; any other coding, or
// chunked with another, would leave the length to guesswork (RFC 9112 6.3).
bool ResponseParser::checkTransferEncoding(const std::string& name, const std::string& value) {
  if (++te_count_ > 1) return fail(duplicateLine(name, value, "chunked"));
  if (!iequals(value, "chunked")) {
    return fail("upstream sent unknown \"Transfer-Encoding\": \"" + value + "\"");
  }
  head_.chunked = true;
  return true;
}

bool ResponseParser::valueComplete() {
  auto& [name, value] = head_.headers[fields_ - 1];
  trimOwsInPlace(&value);
  // Only two names matter for framing; their lengths rule most fields out.
  bool ok = true;
  if (name.size() == 14 && iequals(name, "content-length")) {
    ok = checkContentLength(name, value);
  } else if (name.size() == 17 && iequals(name, "transfer-encoding")) {
    ok = checkTransferEncoding(name, value);
  }
  if (ok && cl_count_ > 0 && te_count_ > 0) {
    // RFC 9112 6.3 lets a recipient drop Content-Length here; a proxy that
    // did would frame differently from a cache in front of it.
    return fail("upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time");
  }
  return ok;
}

// The return value is llhttp's: 1 skips the body, HPE_PAUSED stops
// execute() right after the head.
int ResponseParser::headComplete() {
  if (interim_) return 1;  // RFC 9110 15.2: a 1xx never has content
  ResponseHead& h = head_;
  h.headers.resize(fields_);
  countFields();
  head_done_ = true;
  parser_.settings = const_cast<llhttp_settings_t*>(&bodySettings());
  if (h.status == 101) {
    h.upgrade = true;
    message_done_ = true;  // what follows is the tunnel, not HTTP
    return HPE_PAUSED;
  }
  settleHead((parser_.flags & F_CONNECTION_CLOSE) != 0, (parser_.flags & F_CONNECTION_KEEP_ALIVE) != 0);
  return h.has_body() ? HPE_PAUSED : 1;
}

void ResponseParser::settleHead(bool close_token, bool keep_alive_token) {
  ResponseHead& h = head_;
  body_until_close_ = h.has_body() && !h.chunked && h.content_length < 0;
  bool keep = h.http_minor == 1 || keep_alive_token;
  // A 204 that announces a body anyway may send it (RFC 9110 15.3.5 says
  // it must not): do not bet the next request on where it ends.
  bool bogus_204 = h.status == 204 && (h.chunked || h.content_length > 0);
  // RFC 9112 6.1: chunked in an HTTP/1.0 message is faulty framing; read
  // it, then close.
  bool chunked_10 = h.chunked && h.http_minor == 0;
  h.keep_alive = keep && !close_token && !body_until_close_ && !bogus_204 && !chunked_10;
}

// Most upstream heads arrive whole in one read and hold nothing llhttp
// would object to or read differently; for those, llhttp and its dozen
// callbacks per field are most of a proxied request's parsing cost. The
// checks here are a subset of llhttp's plus ours (the unit test compares
// both paths on every head it builds); anything outside it is declined
// before a byte counts, and llhttp parses the head as before.
size_t ResponseParser::takeSimpleHead(const char* data, size_t len) {
  size_t end = std::min(len, head_max_);
  // Each line is a run of plain bytes ending in CRLF, inside head_max.
  auto lineEnd = [&](size_t from) {
    size_t stop = http::plainRun(data, from, end);
    return stop + 1 < end && data[stop] == '\r' && data[stop + 1] == '\n' ? stop : std::string_view::npos;
  };
  size_t eol = lineEnd(0);
  if (eol == std::string_view::npos) return 0;
  std::string_view line(data, eol);
  std::string_view reason = line.substr(std::min<size_t>(13, eol));
  // "HTTP/1.x DDD reason": a final status (a 1xx has another head after it).
  if (line.size() < 13 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
      line[9] < '2' || line[9] > '9' || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
      line[12] != ' ') {
    return 0;
  }
  ResponseHead& h = head_;
  h.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  h.http_minor = line[7] - '0';
  bool close_token = false, keep_alive_token = false;
  auto decline = [this] {
    startMessage();
    return 0;
  };
  size_t pos = eol + 2;
  for (;;) {
    if (pos + 1 >= end) return decline();  // the head goes on past this read or head_max
    if (data[pos] == '\r') {
      if (data[pos + 1] != '\n') return decline();
      pos += 2;
      break;
    }
    size_t colon = http::tokenRun(data, pos, end);
    if (colon == pos || colon == end || data[colon] != ':') return decline();
    eol = lineEnd(colon + 1);
    if (eol == std::string_view::npos) return decline();
    std::string_view name(data + pos, colon - pos);
    std::string_view raw(data + colon + 1, eol - colon - 1);
    std::string_view value = http::trimOws(raw);
    pos = eol + 2;
    bool ok = true;
    switch (name.size()) {
      case 14:
        if (iequals(name, "content-length")) ok = simpleContentLength(raw);
        break;
      case 10:
        if (iequals(name, "connection")) {
          ok = http::forEachListElement(value, [&](std::string_view tok) {
            if (iequals(tok, "keep-alive")) keep_alive_token = true;
            else if (iequals(tok, "close")) close_token = true;
            else return false;
            return true;
          });
        }
        break;
      case 7: ok = !iequals(name, "upgrade"); break;
      case 16: ok = !iequals(name, "proxy-connection"); break;
      case 17: ok = !iequals(name, "transfer-encoding"); break;
      default: break;
    }
    if (!ok) return decline();
    auto& fields = h.headers;
    if (fields_ < fields.size()) {
      fields[fields_].first.assign(name);
      fields[fields_].second.assign(value);
    } else {
      fields.emplace_back(name, value);
    }
    fields_++;
  }
  if (h.has_body() && h.content_length < 0) return decline();  // until close: llhttp's
  h.reason.assign(reason);
  h.headers.resize(fields_);
  countFields();
  status_done_ = head_done_ = head_reported_ = simple_ = true;
  head_bytes_ = pos;
  after_lf_ = true;
  settleHead(close_token, keep_alive_token);
  if (h.has_body()) body_left_ = static_cast<uint64_t>(h.content_length);
  else message_done_ = true;
  return pos;
}

// One Content-Length, of digits only after spaces (llhttp refuses a
// trailing HTAB, for one) and short enough not to overflow.
bool ResponseParser::simpleContentLength(std::string_view raw) {
  size_t first = raw.find_first_not_of(' ');
  if (head_.content_length >= 0 || first == std::string_view::npos || raw.size() - first > 18) return false;
  int64_t n = 0;
  for (char c : raw.substr(first)) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  head_.content_length = n;
  return true;
}

ResponseParser::Event ResponseParser::countBody(const char* data, size_t len, size_t* consumed) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(len, body_left_));
  body_left_ -= n;
  body_bytes_ += n;
  *consumed = n;
  if (n > 0 && on_body_) on_body_(std::string_view(data, n));
  if (body_left_ > 0) return Event::kNeedMore;
  message_done_ = true;
  return Event::kDone;
}

int ResponseParser::onStatus(llhttp_t* p, const char* at, size_t len) noexcept {
  self(p)->head_.reason.append(at, len);
  return 0;
}

int ResponseParser::onStatusComplete(llhttp_t* p) noexcept { return self(p)->checkStatusLine() ? 0 : -1; }

int ResponseParser::onHeaderField(llhttp_t* p, const char* at, size_t len) noexcept {
  ResponseParser* s = self(p);
  auto& fields = s->head_.headers;
  if (!s->in_name_) {
    s->in_name_ = true;
    if (s->fields_ < fields.size()) {
      fields[s->fields_].first.clear();
      fields[s->fields_].second.clear();
    } else {
      fields.emplace_back();
    }
    s->fields_++;
  }
  fields[s->fields_ - 1].first.append(at, len);
  return 0;
}

int ResponseParser::onHeaderFieldComplete(llhttp_t* p) noexcept { return self(p)->nameComplete() ? 0 : -1; }

int ResponseParser::onHeaderValue(llhttp_t* p, const char* at, size_t len) noexcept {
  ResponseParser* s = self(p);
  s->head_.headers[s->fields_ - 1].second.append(at, len);
  return 0;
}

int ResponseParser::onHeaderValueComplete(llhttp_t* p) noexcept { return self(p)->valueComplete() ? 0 : -1; }

int ResponseParser::onHeadersComplete(llhttp_t* p) noexcept { return self(p)->headComplete(); }

int ResponseParser::onBodyData(llhttp_t* p, const char* at, size_t len) noexcept {
  ResponseParser* s = self(p);
  s->body_bytes_ += len;
  if (s->on_body_) s->on_body_(std::string_view(at, len));
  return 0;
}

int ResponseParser::onMessageComplete(llhttp_t* p) noexcept {
  ResponseParser* s = self(p);
  if (!s->interim_) s->message_done_ = true;
  return HPE_PAUSED;
}

// How many of [data, data+len) llhttp may parse while the head is
// incomplete: no more than is left of head_max, and nothing from an obs-fold
// on (a line starting with SP or HTAB, RFC 9112 5.2), which llhttp would
// take. Stopping llhttp there, rather than checking afterwards, keeps the
// verdict independent of how the reads split the bytes: an error llhttp
// finds earlier wins, and a later one never does. *why says what stopped
// llhttp short of len, if anything.
size_t ResponseParser::headRoom(const char* data, size_t len, HeadStop* why) {
  size_t room = std::min(len, head_max_ - head_bytes_);
  *why = room < len ? HeadStop::kHeadMax : HeadStop::kNone;
  size_t i = 0;
  bool lf = after_lf_;
  while (i < room) {
    if (lf && (data[i] == ' ' || data[i] == '\t')) {
      *why = HeadStop::kObsFold;
      return i;
    }
    const void* nl = memchr(data + i, '\n', room - i);
    if (nl == nullptr) break;
    i = static_cast<size_t>(static_cast<const char*>(nl) - data) + 1;
    lf = true;
  }
  return room;
}

ResponseParser::Event ResponseParser::execute(const char* data, size_t len, size_t* consumed) {
  *consumed = 0;
  if (failed_) return Event::kError;
  if (head_.upgrade) {
    fail("response parser used after an upgrade");
    return Event::kError;
  }
  if (message_done_ && head_reported_) return Event::kDone;
  if (simple_) return countBody(data, len, consumed);
  if (!head_done_ && head_bytes_ == 0 && len > 0) {
    // The first bytes of the head: strings for its fields, from the
    // request that ended last (in cache) when the parser has none.
    if (head_.headers.empty()) http::UpstreamRecord::takeSpareHeaders(&head_.headers);
    size_t n = takeSimpleHead(data, len);
    if (n > 0) {
      *consumed = n;
      return Event::kHead;
    }
  }
  if (!llhttp_started_) restartLlhttp();
  static const char kNothing = 0;
  if (data == nullptr) data = &kNothing;  // llhttp needs a pointer even for 0 bytes
  size_t off = 0;
  for (;;) {
    bool in_head = !head_done_;
    HeadStop stop = HeadStop::kNone;
    size_t n = in_head ? headRoom(data + off, len - off, &stop) : len - off;
    llhttp_errno_t rc = llhttp_execute(&parser_, data + off, n);
    size_t used = rc == HPE_OK ? n : static_cast<size_t>(llhttp_get_error_pos(&parser_) - (data + off));
    if (in_head && used > 0) {
      head_bytes_ += used;
      after_lf_ = data[off + used - 1] == '\n';
    }
    off += used;
    *consumed = off;
    if (rc == HPE_OK) {
      if (stop == HeadStop::kHeadMax) {
        fail("upstream sent too big header");
        return Event::kError;
      }
      if (stop == HeadStop::kObsFold) {
        failHead("obsolete line folding");
        return Event::kError;
      }
      return Event::kNeedMore;
    }
    if (rc != HPE_PAUSED) {
      if (!failed_) failFromLlhttp(rc);
      return Event::kError;
    }
    llhttp_resume(&parser_);
    if (interim_) {
      // The 1xx is done: the final response follows on the same stream.
      restartLlhttp();
      startMessage();
      continue;
    }
    if (!head_reported_) {
      head_reported_ = true;
      return Event::kHead;
    }
    return Event::kDone;
  }
}

bool ResponseParser::finishOnEof() {
  if (failed_) return false;
  if (head_done_ && body_until_close_) message_done_ = true;
  return message_done_;
}

}  // namespace tidegate::proxy
