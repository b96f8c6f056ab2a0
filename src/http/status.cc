#include "http/status.h"

#include <map>

namespace tidegate::http {
namespace {

struct Entry {
  int code;
  std::string_view reason;
};

constexpr Entry kReasons[] = {
    {100, "Continue"}, {101, "Switching Protocols"}, {200, "OK"}, {201, "Created"}, {202, "Accepted"},
    {203, "Non-Authoritative Information"}, {204, "No Content"}, {205, "Reset Content"},
    {206, "Partial Content"}, {300, "Multiple Choices"}, {301, "Moved Permanently"}, {302, "Moved Temporarily"},
    {303, "See Other"}, {304, "Not Modified"}, {307, "Temporary Redirect"}, {308, "Permanent Redirect"},
    {400, "Bad Request"}, {401, "Unauthorized"}, {402, "Payment Required"}, {403, "Forbidden"},
    {404, "Not Found"}, {405, "Not Allowed"}, {406, "Not Acceptable"}, {408, "Request Time-out"},
    {409, "Conflict"}, {410, "Gone"}, {411, "Length Required"}, {412, "Precondition Failed"},
    {413, "Request Entity Too Large"}, {414, "Request-URI Too Large"}, {415, "Unsupported Media Type"},
    {416, "Requested Range Not Satisfiable"}, {417, "Expectation Failed"}, {421, "Misdirected Request"},
    {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"}, {500, "Internal Server Error"},
    {501, "Not Implemented"}, {502, "Bad Gateway"}, {503, "Service Temporarily Unavailable"},
    {504, "Gateway Time-out"}, {505, "HTTP Version Not Supported"}, {507, "Insufficient Storage"},
};

}  // namespace

std::string_view reasonPhrase(int code) {
  for (const auto& e : kReasons) {
    if (e.code == code) return e.reason;
  }
  return {};
}

std::string_view errorPage(int code) {
  if (code < 300 || code == 304) return {};
  static std::map<int, std::string> cache;
  auto it = cache.find(code);
  if (it != cache.end()) return it->second;
  std::string title = std::to_string(code);
  std::string_view reason = reasonPhrase(code);
  if (!reason.empty()) {
    title.push_back(' ');
    title.append(reason);
  }
  std::string page;
  page.append("<html>\r\n<head><title>").append(title).append("</title></head>\r\n<body>\r\n<center><h1>");
  page.append(title).append("</h1></center>\r\n<hr><center>tidegate</center>\r\n</body>\r\n</html>\r\n");
  return cache.emplace(code, std::move(page)).first->second;
}

}  // namespace tidegate::http
