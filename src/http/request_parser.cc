#include "http/request_parser.h"

#include <strings.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <array>
#include <cstring>
#include <limits>

#include "http/ascii.h"

namespace tidegate::http {
namespace {

// RELIABILITY.md: a chunk extension over 4 KB is abuse, not a use case.
constexpr size_t kMaxChunkExtension = 4096;

const llhttp_settings_t& settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    return st;
  }();
  return s;
}

}  // namespace

// Two callback tables. While the head is parsed llhttp only validates: the
// head scanner has recorded the request line and the fields already, so no
// per-field callback runs. Once the head is done the body table takes over
// (body bytes, chunk extensions, trailer sizes, the end of the message).
const llhttp_settings_t& RequestParser::headSettings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st = settings();
    st.on_headers_complete = &RequestParser::onHeadersComplete;
    return st;
  }();
  return s;
}

const llhttp_settings_t& RequestParser::bodySettings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st = settings();
    st.on_header_field = &RequestParser::onTrailer;
    st.on_header_value = &RequestParser::onTrailer;
    st.on_body = &RequestParser::onBody;
    st.on_chunk_extension_name = &RequestParser::onChunkExtension;
    st.on_chunk_extension_value = &RequestParser::onChunkExtension;
    st.on_chunk_header = &RequestParser::onChunkHeader;
    st.on_message_complete = &RequestParser::onMessageComplete;
    return st;
  }();
  return s;
}

// llhttp is set up when a message first needs it (feedLlhttp).
RequestParser::RequestParser() { head_.headers.reserve(16); }

void RequestParser::reset(const conf::HeadLimits& limits, uint64_t max_body) {
  // llhttp is set up again when this message first needs it (feedLlhttp):
  // the usual GET never does.
  limits_ = limits;
  max_body_ = max_body;
  head_.clear();
  head_bytes_ = line_len_ = line_no_ = line_start_ = scanned_ = error_at_ = head_end_ = 0;
  prev_cr_ = head_scanned_ = llhttp_fed_ = false;
  cl_count_ = te_count_ = host_count_ = te_status_ = 0;
  head_done_ = message_done_ = false;
  body_bytes_ = 0;
  chunk_ext_len_ = trailer_bytes_ = 0;
  error_status_ = 0;
  error_text_.clear();
}

bool RequestParser::fail(int status, std::string text) {
  if (error_status_ == 0) {
    error_status_ = status;
    error_text_ = std::move(text);
  }
  return false;
}

// RFC 9112 3: request-line = method SP request-target SP HTTP-version, with
// exactly one space each; llhttp tolerates more than that.
// Each part is checked while it is scanned for the space after it (they
// are short); of several faults the one reported is the first of: no first
// space, the method, no second space, the version, the target.
bool RequestParser::checkRequestLine(std::string_view line) {
  size_t n = line.size(), sp1 = 0;
  bool bad_method = false;
  for (; sp1 < n && line[sp1] != ' '; sp1++) {
    char c = line[sp1];
    if (!(c >= 'A' && c <= 'Z') && c != '-' && c != '_') bad_method = true;
  }
  if (sp1 == n || sp1 == 0) return fail(400, "client sent invalid request line");
  if (bad_method) return fail(400, "client sent invalid method");
  size_t sp2 = sp1 + 1;
  bool bad_target = false;
  for (; sp2 < n && line[sp2] != ' '; sp2++) {
    auto c = static_cast<unsigned char>(line[sp2]);
    // '#' never belongs in a request-target (RFC 9112 3.2); controls neither.
    if (c == '#' || c < 0x21 || c == 0x7f) bad_target = true;
  }
  if (sp2 == n || sp2 == sp1 + 1) return fail(400, "client sent invalid request line");
  std::string_view version = line.substr(sp2 + 1);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
      version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return fail(400, "client sent invalid request line");
  }
  if (bad_target) return fail(400, "client sent invalid character in request target");
  uint32_t off = static_cast<uint32_t>(line.data() - base_);
  head_.request_line = Slice{off, static_cast<uint32_t>(line.size())};
  head_.method = Slice{off, static_cast<uint32_t>(sp1)};
  head_.target = Slice{off + static_cast<uint32_t>(sp1 + 1), static_cast<uint32_t>(sp2 - sp1 - 1)};
  return true;
}

// Records one header line as name and value slices. A line without a colon
// is left to llhttp, which rejects it.
void RequestParser::recordField(std::string_view line) {
  const char* colon = static_cast<const char*>(memchr(line.data(), ':', line.size()));
  if (!colon) return;
  std::string_view name(line.data(), static_cast<size_t>(colon - line.data()));
  std::string_view value = trimOws(std::string_view(colon + 1, static_cast<size_t>(line.data() + line.size() - colon - 1)));
  HeaderField f;
  f.name = Slice{static_cast<uint32_t>(name.data() - base_), static_cast<uint32_t>(name.size())};
  f.value = Slice{static_cast<uint32_t>(value.data() - base_), static_cast<uint32_t>(value.size())};
  head_.headers.push_back(f);
}

// Bytes the head scanner must look at; everything else is skipped in a
// tight loop (this runs over every head byte, so it is kept cheap).
constexpr std::array<bool, 256> kHeadSpecial = [] {
  std::array<bool, 256> t{};
  t[0] = t['\n'] = t['\r'] = true;
  return t;
}();

// Returns the index of the first CR, LF or NUL in data[i, len), or len.
// Sixteen bytes at a time where SSE2 is there (every x86-64).
static size_t skipOrdinary(const char* data, size_t i, size_t len) {
#if defined(__SSE2__)
  const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'), nul = _mm_setzero_si128();
  while (i + 16 <= len) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i));
    __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)), _mm_cmpeq_epi8(v, nul));
    int mask = _mm_movemask_epi8(hit);
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    i += 16;
  }
#endif
  while (i < len && !kHeadSpecial[static_cast<unsigned char>(data[i])]) i++;
  return i;
}

// Every failure records the exact byte it is about (error_at_), so that
// preferEarlierLlhttpError() can tell which of two errors comes first
// whatever the reads looked like.
bool RequestParser::failAt(const char* at, int status, const char* text) {
  error_at_ = static_cast<size_t>(at - base_);
  return fail(status, text);
}

bool RequestParser::scanHead(const char* data, size_t len, size_t* head_end) {
  *head_end = len;
  size_t i = 0;
  while (i < len) {
    if (line_len_ == 0 && !prev_cr_) {
      line_start_ = static_cast<size_t>(data + i - base_);
      if (line_no_ > 0 && (data[i] == ' ' || data[i] == '\t')) {
        return failAt(data + i, 400, "client sent obsolete line folding");  // RFC 9112 5.2
      }
    }
    // The run of ordinary bytes up to the next CR, LF or NUL.
    size_t run = skipOrdinary(data, i, len);
    if (run > i) {
      if (prev_cr_) return failAt(data + i, 400, "client sent bare CR in request head");
      size_t n = run - i;
      // The first byte past each limit, if this run crosses one.
      size_t line_limit = line_no_ == 0 ? limits_.request_line : limits_.header_line;
      size_t cross_line = line_len_ + n > line_limit ? i + (line_limit - line_len_) : len + 1;
      size_t cross_total = head_bytes_ + n > limits_.total ? i + (limits_.total - head_bytes_) : len + 1;
      if (cross_line <= cross_total && cross_line <= len) {
        return failAt(data + cross_line, line_no_ == 0 ? 414 : 431,
                      line_no_ == 0 ? "client sent too long URI" : "client sent too long header line");
      }
      if (cross_total <= len) return failAt(data + cross_total, 431, "client sent too large request head");
      line_len_ += n;
      head_bytes_ += n;
      i = run;
      if (i == len) break;
    }
    const char* at = data + i;
    char c = data[i++];
    head_bytes_++;
    if (head_bytes_ > limits_.total) return failAt(at, 431, "client sent too large request head");
    if (c == '\0') return failAt(at, 400, "client sent NUL in request head");
    if (c == '\r') {
      if (prev_cr_) return failAt(at, 400, "client sent bare CR in request head");
      prev_cr_ = true;
      if (i == len || data[i] != '\n') continue;
      // The usual CRLF: its LF now, with the same checks as a lone byte.
      at = data + i++;
      if (++head_bytes_ > limits_.total) return failAt(at, 431, "client sent too large request head");
    }
    // c == '\n', or the LF of a CRLF
    if (!prev_cr_) return failAt(at, 400, "client sent bare LF in request head");
    prev_cr_ = false;
    if (line_len_ == 0) {
      if (line_no_ == 0) continue;  // RFC 9112 2.2: tolerate empty lines before the request line
      head_scanned_ = true;
      *head_end = i;
      return true;
    }
    std::string_view line(base_ + line_start_, line_len_);
    if (line_no_ == 0) {
      if (!checkRequestLine(line)) return false;
    } else {
      recordField(line);
    }
    line_no_++;
    line_len_ = 0;
    if (line_no_ - 1 > limits_.max_fields) return failAt(at, 431, "client sent too many header fields");
  }
  return true;
}

RequestParser::Event RequestParser::execute(const char* base, size_t from, size_t to, size_t* consumed) {
  *consumed = 0;
  if (error_status_) return Event::kError;
  base_ = base;
  const char* data = base + from;
  size_t len = to - from;
  if (!head_scanned_) {
    size_t head_end = 0;
    size_t scan_from = scanned_ > from ? scanned_ : from;
    if (scan_from < to && !scanHead(base + scan_from, to - scan_from, &head_end)) {
      preferEarlierLlhttpError(from);
      return Event::kError;
    }
    scanned_ = to;
    if (head_scanned_) head_end_ = scan_from + head_end;
    // llhttp sees the request line only once it is whole, so that its
    // verdict (505 vs 400) never depends on where the bytes were split.
    if (line_no_ == 0) return Event::kNeedMore;
    // A whole head in the first bytes of a request, plain enough that the
    // scanner's checks and takeSimpleHead()'s leave llhttp nothing to say
    // (it would cost about as much as the rest of the parsing): the request
    // is complete without it. The usual GET; anything else goes to llhttp.
    if (head_scanned_ && !llhttp_fed_ && takeSimpleHead()) {
      if (!finishHead()) return Event::kError;
      message_done_ = true;
      *consumed = head_end_ - from;
      return Event::kMessageComplete;
    }
  }
  llhttp_errno_t rc = feedLlhttp(data, len);
  if (rc == HPE_OK) {
    *consumed = len;
    return Event::kNeedMore;
  }
  if (rc == HPE_PAUSED) {
    *consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    llhttp_resume(&parser_);
    return Event::kMessageComplete;
  }
  if (error_status_ == 0) failFromLlhttp(rc);
  return Event::kError;
}

llhttp_errno_t RequestParser::feedLlhttp(const char* data, size_t len) {
  if (!llhttp_fed_) {
    llhttp_init(&parser_, HTTP_REQUEST, &headSettings());
    parser_.data = this;
    llhttp_fed_ = true;
  }
  return llhttp_execute(&parser_, data, len);
}

void RequestParser::failFromLlhttp(llhttp_errno_t rc) {
  int status = rc == HPE_INVALID_VERSION ? 505 : 400;
  fail(status, std::string("client sent invalid request (") + llhttp_errno_name(rc) + ": " +
                   llhttp_get_error_reason(&parser_) + ")");
}

// The scanner found an error at error_at_. llhttp has not seen the bytes
// before it yet; if it objects to one of them, that earlier error is the
// answer, as it would have been had those bytes arrived in an earlier read.
// So the status never depends on how the bytes were split.
void RequestParser::preferEarlierLlhttpError(size_t from) {
  // llhttp never sees a partial request line, so line-0 errors stand.
  if (line_no_ == 0 || error_at_ <= from) return;
  int status = error_status_;
  std::string text = std::move(error_text_);
  error_status_ = 0;
  error_text_.clear();
  llhttp_errno_t rc = feedLlhttp(base_ + from, error_at_ - from);
  if (rc != HPE_OK && rc != HPE_PAUSED && error_status_ == 0) {
    failFromLlhttp(rc);
    return;
  }
  if (error_status_ == 0) {
    error_status_ = status;
    error_text_ = std::move(text);
  }
}

int RequestParser::onTrailer(llhttp_t* p, const char*, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  // Trailers are counted, never merged into the head.
  self->trailer_bytes_ += len;
  if (self->trailer_bytes_ > self->limits_.header_line) {
    self->fail(400, "client sent too large trailer");
    return -1;
  }
  return 0;
}

bool RequestParser::checkTransferEncoding(std::string_view value) {
  // Only "chunked", alone and last, frames a request body (RFC 9112 6.1).
  // Anything that merely resembles it is an attack, not a coding: 400.
  // A real coding we do not implement (gzip, identity...) is 501.
  bool unknown = false;
  int chunked_seen = 0;
  bool last_chunked = false;
  bool ok = forEachListElement(value, [&](std::string_view tok) {
    if (tok.empty()) return fail(400, "client sent empty Transfer-Encoding element");
    if (tok.find(';') != std::string_view::npos || tok.find(' ') != std::string_view::npos) {
      return fail(400, "client sent Transfer-Encoding with parameters");
    }
    last_chunked = iequals(tok, "chunked");
    if (last_chunked) {
      chunked_seen++;
    } else if (tok.size() >= 7 && iequals(tok.substr(0, 7), "chunked")) {
      return fail(400, "client sent malformed Transfer-Encoding \"" + std::string(tok) + "\"");
    } else {
      unknown = true;
    }
    return true;
  });
  if (!ok) return false;
  if (chunked_seen > 1 || (chunked_seen == 1 && !last_chunked)) {
    return fail(400, "client sent invalid Transfer-Encoding \"" + std::string(value) + "\"");
  }
  if (unknown) {
    error_status_ = 0;
    return fail(501, "client sent unknown transfer coding \"" + std::string(value) + "\"");
  }
  head_.chunked = true;
  return true;
}

// The framing-relevant fields: Content-Length, Transfer-Encoding, Host, Expect.
bool RequestParser::inspectField(size_t index) {
  const HeaderField& h = head_.headers[index];
  std::string_view name = h.name.in(base_);
  std::string_view value = h.value.in(base_);
  if (name.empty()) return fail(400, "client sent empty header name");
  // Only four names matter here; their lengths tell most fields apart cheaply.
  size_t n = name.size();
  if (n != 4 && n != 6 && n != 14 && n != 17) return true;
  if (iequals(name, "content-length")) {
    cl_count_++;
    uint64_t v = 0;
    bool ok = !value.empty();
    for (char c : value) {
      if (c < '0' || c > '9' || v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - 9) / 10) {
        ok = false;
        break;
      }
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (!ok) return fail(400, "client sent invalid \"Content-Length\" header");
    head_.content_length = static_cast<int64_t>(v);
  } else if (iequals(name, "transfer-encoding")) {
    te_count_++;
    if (te_count_ == 1 && !checkTransferEncoding(value)) {
      // Keep going so that a 400-worthy field later still wins over 501.
      if (error_status_ == 400) return false;
      te_status_ = error_status_;
      error_status_ = 0;
    }
  } else if (iequals(name, "host")) {
    host_count_++;
    head_.host_index = static_cast<int>(index);
    for (char c : value) {
      if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x21) return fail(400, "client sent invalid host header");
    }
  } else if (iequals(name, "expect")) {
    if (iequals(value, "100-continue")) head_.expect_continue = true;
  }
  return true;
}

bool RequestParser::checkFramingHeaders() {
  RequestHead& h = head_;
  if (h.http_major != 1 || h.http_minor > 1) return fail(505, "client sent unsupported HTTP version");
  if (host_count_ > 1) return fail(400, "client sent duplicate host header");
  if (host_count_ == 0 && h.http_minor == 1) return fail(400, "client sent HTTP/1.1 request without \"Host\" header");
  if (cl_count_ > 1) return fail(400, "client sent duplicate \"Content-Length\" header");
  if (te_count_ > 1) return fail(400, "client sent duplicate \"Transfer-Encoding\" header");
  if (te_count_ > 0 && cl_count_ > 0) return fail(400, "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time");
  if (te_count_ > 0 && h.http_minor == 0) return fail(400, "client sent \"Transfer-Encoding\" in HTTP/1.0 request");
  if (te_status_) {
    error_status_ = te_status_;
    if (error_text_.empty()) error_text_ = "client sent unknown transfer coding";
    return false;
  }
  std::string_view target = h.target.in(base_);
  if (target.empty() ||
      !(target[0] == '/' || (target.size() > 7 && strncasecmp(target.data(), "http://", 7) == 0) ||
        (target.size() > 8 && strncasecmp(target.data(), "https://", 8) == 0))) {
    return fail(400, "client sent invalid request target");
  }
  if (max_body_ && h.content_length > 0 && static_cast<uint64_t>(h.content_length) > max_body_) {
    return fail(413, "client intended to send too large body: " + std::to_string(h.content_length) + " bytes");
  }
  return true;
}

int RequestParser::onHeadersComplete(llhttp_t* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  RequestHead& h = self->head_;
  h.http_major = llhttp_get_http_major(p);
  h.http_minor = llhttp_get_http_minor(p);
  h.is_head = llhttp_get_method(p) == HTTP_HEAD;
  h.upgrade = llhttp_get_upgrade(p) != 0;
  h.keep_alive = llhttp_should_keep_alive(p) != 0;
  // The body bytes (if any) come next, with the body table.
  p->settings = const_cast<llhttp_settings_t*>(&bodySettings());
  return self->finishHead() ? 0 : -1;
}

bool RequestParser::finishHead() {
  RequestHead& h = head_;
  h.head_len = head_bytes_;
  for (size_t i = 0; i < h.headers.size(); i++) {
    if (!inspectField(i)) return false;
  }
  if (!checkFramingHeaders()) return false;
  if (h.content_length < 0 && !h.chunked) h.content_length = 0;
  if (h.chunked) h.content_length = -1;
  head_done_ = true;
  if (handler_) {
    std::string why;
    int status = handler_->onHeadComplete(&why);
    if (status != 0) return fail(status, why);
  }
  return true;
}

namespace {

// What takeSimpleHead() lets through without llhttp. Target: RFC 3986's
// unreserved, sub-delims, ':', '@', '/', '?' and '%' (no '#', no quotes,
// brackets or backslashes, which llhttp judges). Field names and values:
// isToken() and isPlainValue() (http/ascii.h).
constexpr std::array<bool, 256> kSimpleTargetChar = charTable("-._~!$&'()*+,;=:@/?%", true);
// Fields about the body or a protocol switch: a head with one goes to llhttp.
constexpr std::string_view kFramingFields[] = {"content-length", "transfer-encoding", "expect", "upgrade"};

}  // namespace

// A GET or HEAD of HTTP/1.0 or 1.1 to an origin-form target of plain
// characters, whose every line is a field of a token name and a plain value,
// none about the body (Content-Length, Transfer-Encoding, Expect) or a
// protocol switch (Upgrade), and a Connection field of only "keep-alive" and
// "close": llhttp would accept it and say what this says (its keep-alive
// rule included). The scanner has checked the line endings, the request
// line's shape, obs-fold and the limits.
bool RequestParser::takeSimpleHead() {
  RequestHead& h = head_;
  std::string_view method = h.method.in(base_);
  bool is_head = method == "HEAD";
  if (!is_head && method != "GET") return false;
  std::string_view line = h.request_line.in(base_);
  char major = line[line.size() - 3], minor = line.back();  // "HTTP/d.d", checked
  if (major != '1' || (minor != '0' && minor != '1')) return false;
  std::string_view target = h.target.in(base_);
  if (target.empty() || target[0] != '/' || !allOf(target, kSimpleTargetChar)) return false;
  if (h.headers.size() != line_no_ - 1) return false;  // a line without a colon
  bool keep_alive_token = false, close_token = false;
  for (const HeaderField& f : h.headers) {
    std::string_view name = f.name.in(base_);
    std::string_view value = f.value.in(base_);
    if (!isToken(name) || !isPlainValue(value)) return false;
    for (std::string_view framing : kFramingFields) {
      if (iequals(name, framing)) return false;  // iequals compares the sizes first
    }
    if (iequals(name, "connection") && !forEachListElement(value, [&](std::string_view tok) {
          if (iequals(tok, "keep-alive")) keep_alive_token = true;
          else if (iequals(tok, "close")) close_token = true;
          else return false;
          return true;
        })) {
      return false;
    }
  }
  h.http_major = 1;
  h.http_minor = minor - '0';
  h.is_head = is_head;
  h.upgrade = false;
  // llhttp_should_keep_alive: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive".
  h.keep_alive = minor == '1' ? !close_token : keep_alive_token;
  return true;
}

int RequestParser::onChunkHeader(llhttp_t* p) {
  static_cast<RequestParser*>(p->data)->chunk_ext_len_ = 0;
  return 0;
}

int RequestParser::onChunkExtension(llhttp_t* p, const char*, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->chunk_ext_len_ += len;
  if (self->chunk_ext_len_ > kMaxChunkExtension) {
    self->fail(400, "client sent too long chunk extension");
    return -1;
  }
  return 0;
}

int RequestParser::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->body_bytes_ += len;
  if (self->max_body_ && self->body_bytes_ > self->max_body_) {
    self->fail(413, "client intended to send too large chunked body");
    return -1;
  }
  if (self->handler_) self->handler_->onBodyData(std::string_view(at, len));
  return 0;
}

int RequestParser::onMessageComplete(llhttp_t* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->message_done_ = true;
  return HPE_PAUSED;
}

}  // namespace tidegate::http
