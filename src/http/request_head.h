// A parsed request head. Names and values are offsets into the connection's
// read buffer, which keeps the head in place for the life of the request,
// so no header byte is copied.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace tidegate::http {

struct Slice {
  uint32_t off = 0;
  uint32_t len = 0;
  std::string_view in(const char* base) const { return std::string_view(base + off, len); }
  bool empty() const { return len == 0; }
};

struct HeaderField {
  Slice name;
  Slice value;
};

struct RequestHead {
  Slice method;
  Slice target;  // the request-target as sent ($request_uri)
  Slice request_line;
  int http_major = 1;
  int http_minor = 1;
  std::vector<HeaderField> headers;
  int64_t content_length = -1;  // -1: none declared
  bool chunked = false;
  bool keep_alive = true;
  bool expect_continue = false;
  bool upgrade = false;
  bool is_head = false;
  int host_index = -1;  // into headers
  size_t head_len = 0;

  void clear() {
    method = target = request_line = Slice{};
    http_major = http_minor = 1;
    headers.clear();
    content_length = -1;
    chunked = expect_continue = upgrade = is_head = false;
    keep_alive = true;
    host_index = -1;
    head_len = 0;
  }
  bool hasBody() const { return chunked || content_length > 0; }
};

}  // namespace tidegate::http
