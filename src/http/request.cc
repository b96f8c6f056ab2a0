#include "http/request.h"

#include "http/ascii.h"

namespace tidegate::http {

std::string_view Request::header(std::string_view lower_name) const {
  std::string_view found;
  forEachHeader([&](std::string_view name, std::string_view value) {
    if (!iequals(name, lower_name)) return true;
    found = value;
    return false;
  });
  return found;
}

void Request::editHeaders() {
  if (headers_edited_) return;
  headers_edited_ = true;
  edited_headers_.clear();
  for (const auto& h : head->headers) edited_headers_.emplace_back(h.name.in(base), h.value.in(base));
}

void Request::removeHeader(std::string_view name) {
  editHeaders();
  std::erase_if(edited_headers_, [&](const auto& h) { return iequals(h.first, name); });
}

void Request::addHeader(std::string_view name, std::string_view value) {
  editHeaders();
  edited_headers_.emplace_back(name, value);
}

namespace {

// The worker's spare header vectors (UpstreamRecord::releaseHeaders), the
// last released on top.
struct SpareHeaders {
  std::vector<std::vector<UpstreamRecord::Field>> stack;
};
// Enough for every request that ends in one loop turn to leave its vector
// for the heads parsed in the next; a vector past the byte bound (an
// unusual head) is freed rather than kept.
constexpr size_t kMaxSpareHeaders = 256;
constexpr size_t kMaxSpareHeaderBytes = 16 * 1024;

SpareHeaders& spareHeaders() {
  thread_local SpareHeaders spares;
  return spares;
}

}  // namespace

void UpstreamRecord::releaseHeaders() {
  if (fields_.empty()) return;
  auto& stack = spareHeaders().stack;
  if (stack.size() >= kMaxSpareHeaders || fields_bytes_ > kMaxSpareHeaderBytes) return;
  stack.push_back(std::move(fields_));
  fields_.clear();  // moved from: empty, but say so
  field_count_ = fields_bytes_ = 0;
}

bool UpstreamRecord::takeSpareHeaders(std::vector<Field>* out) {
  auto& stack = spareHeaders().stack;
  if (stack.empty()) return false;
  out->swap(stack.back());
  stack.pop_back();
  return true;
}

DetachedRequest::DetachedRequest(const Request& r)
    : bytes_(r.base, r.head->head_len), head_(*r.head), conn_(r.conn ? *r.conn : ConnInfo{}) {
  static_cast<RequestFields&>(req_) = r;
  req_.base = bytes_.data();
  req_.head = &head_;
  req_.conn = &conn_;
  if (r.body.read() && !r.body.inFile()) {
    req_.body.setData(r.body.data());
    req_.body.markRead();
  }
}

}  // namespace tidegate::http
