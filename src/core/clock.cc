#include "core/clock.h"

#include <time.h>

#include <cstdio>

namespace tidegate::core {
namespace {

struct Cache {
  time_t sec = -1;
  char http[40];
  size_t http_len = 0;
  char local[40];
  size_t local_len = 0;
  char iso[40];
  size_t iso_len = 0;
};

Cache& cache() {
  static Cache c;
  time_t now = static_cast<time_t>(wallMs() / 1000);
  if (now != c.sec) {
    c.sec = now;
    struct tm gmt, loc;
    gmtime_r(&now, &gmt);
    localtime_r(&now, &loc);
    c.http_len = strftime(c.http, sizeof(c.http), "%a, %d %b %Y %H:%M:%S GMT", &gmt);
    c.local_len = strftime(c.local, sizeof(c.local), "%d/%b/%Y:%H:%M:%S %z", &loc);
    char tz[8];
    strftime(tz, sizeof(tz), "%z", &loc);  // +0000 -> +00:00
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &loc);
    int n = snprintf(c.iso, sizeof(c.iso), "%s%.3s:%.2s", date, tz, tz + 3);
    c.iso_len = n > 0 ? static_cast<size_t>(n) : 0;
  }
  return c;
}

}  // namespace

uint64_t wallMs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

double wallSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec / 1000000) / 1000.0;
}

std::string_view httpDate() {
  Cache& c = cache();
  return std::string_view(c.http, c.http_len);
}

std::string_view timeLocal() {
  Cache& c = cache();
  return std::string_view(c.local, c.local_len);
}

std::string_view timeIso8601() {
  Cache& c = cache();
  return std::string_view(c.iso, c.iso_len);
}

}  // namespace tidegate::core
