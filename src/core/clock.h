// Wall-clock time and the formatted dates every response and log line needs,
// re-formatted at most once per second per process.
#pragma once

#include <cstdint>
#include <string_view>

namespace tidegate::core {

// Milliseconds since the epoch (CLOCK_REALTIME_COARSE: a vDSO read, no syscall).
uint64_t wallMs();
// The precise wall clock in seconds, cut to milliseconds (ngx.now()).
double wallSeconds();

// "Sun, 29 Nov 2026 16:20:00 GMT" (RFC 9110 5.6.7 IMF-fixdate).
std::string_view httpDate();
// "29/Nov/2026:16:20:00 +0000" as nginx's $time_local.
std::string_view timeLocal();
// "2026-11-29T16:20:00+00:00" as nginx's $time_iso8601.
std::string_view timeIso8601();

}  // namespace tidegate::core
