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
