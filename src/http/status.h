// Status lines and nginx-shaped built-in error pages.
#pragma once

#include <string>
#include <string_view>

namespace tidegate::http {

// "OK" for 200; "" for a code without a standard reason phrase.
std::string_view reasonPhrase(int code);
// The HTML page nginx sends for 3xx/4xx/5xx without a body of its own; empty
// for codes that carry none.
std::string_view errorPage(int code);

}  // namespace tidegate::http
