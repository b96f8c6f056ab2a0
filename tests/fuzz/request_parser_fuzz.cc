// Fuzz target for the strict request parser. The oracle is the smuggling
// property itself: whatever the bytes, the outcome (status, number of
// messages, body bytes delivered) must not depend on how they are split
// across reads. The first input byte picks the split points.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "http/request_parser.h"

namespace {

using tidegate::http::RequestParser;

struct Outcome {
  int status = 0;
  int messages = 0;
  std::string body;
  bool operator!=(const Outcome& o) const { return status != o.status || messages != o.messages || body != o.body; }
};

class Sink : public RequestParser::Handler {
 public:
  int onHeadComplete(std::string*) override { return 0; }
  void onBodyData(std::string_view d) override {
    if (body.size() < (1u << 16)) body.append(d);
  }
  std::string body;
};

Outcome run(const std::string& input, const std::vector<size_t>& cuts) {
  RequestParser p;
  Sink sink;
  tidegate::conf::HeadLimits limits;
  limits.request_line = limits.header_line = 256;  // small, so the limits get exercised too
  limits.total = 1024;
  limits.max_fields = 16;
  p.reset(limits, 4096);
  p.setHandler(&sink);
  std::string buf;
  size_t start = 0, parsed = 0, fed = 0;
  Outcome out;
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  for (size_t end : ends) {
    if (end < fed) continue;
    buf.append(input, fed, end - fed);
    fed = end;
    while (parsed < buf.size()) {
      size_t consumed = 0;
      auto ev = p.execute(buf.data() + start, parsed - start, buf.size() - start, &consumed);
      if (consumed > buf.size() - parsed) abort();  // consumed more than it was given
      parsed += consumed;
      if (ev == RequestParser::Event::kError) {
        out.status = p.errorStatus();
        if (out.status < 400 || out.status > 599) abort();
        out.body = sink.body;
        return out;
      }
      if (ev == RequestParser::Event::kNeedMore) break;
      const auto& h = p.head();
      // Every slice of the head lies inside the bytes of this message.
      for (const auto& f : h.headers) {
        if (f.name.off + f.name.len > parsed - start || f.value.off + f.value.len > parsed - start) abort();
      }
      out.messages++;
      start = parsed;
      p.reset(limits, 4096);
    }
  }
  out.body = sink.body;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  unsigned seed = data[0];
  std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  Outcome whole = run(input, {});
  std::vector<size_t> cuts;
  for (size_t i = 1 + seed % 7; i < input.size(); i += 1 + (seed = seed * 1103515245u + 12345u) % 13) cuts.push_back(i);
  if (run(input, cuts) != whole) abort();  // the answer depended on the split
  std::vector<size_t> bytes;
  for (size_t i = 1; i < input.size() && input.size() < 512; i++) bytes.push_back(i);
  if (!bytes.empty() && run(input, bytes) != whole) abort();
  return 0;
}
