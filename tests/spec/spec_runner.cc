// Data-driven spec tests in the spirit of OpenResty's Test::Nginx: each
// block of a tests/spec/*.spec file is a conf fragment, a request and the
// expected response and error-log lines. Every block forbids [error],
// [crit], [alert] and [emerg] lines unless it names one in --- error_log.
// Format: see tests/spec/README.md.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace tidegate::test {
namespace {

struct Block {
  std::string file;
  int line = 0;
  std::string name;
  std::map<std::string, std::string> sections;  // "--- name" -> text (or the value after ':')
  std::set<std::string> chomp;
  bool has(const std::string& k) const { return sections.count(k) > 0; }
  const std::string& get(const std::string& k) const {
    static const std::string kEmpty;
    auto it = sections.find(k);
    return it == sections.end() ? kEmpty : it->second;
  }
};

std::string trimTrailingNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::vector<Block> parseSpec(const std::string& path) {
  std::ifstream in(path);
  std::vector<Block> blocks;
  std::string line, section;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    if (line.rfind("=== ", 0) == 0) {
      Block b;
      b.file = path;
      b.line = lineno;
      b.name = line.substr(4);
      blocks.push_back(b);
      section.clear();
      continue;
    }
    if (blocks.empty()) continue;  // preamble and comments before the first block
    if (line.rfind("--- ", 0) == 0) {
      std::string rest = line.substr(4);
      size_t colon = rest.find(':');
      if (colon != std::string::npos) {  // "--- name: value" on one line
        std::string value = rest.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        blocks.back().sections[rest.substr(0, colon)] = value;
        section.clear();
      } else {
        // "--- response_body chomp": the modifier drops the final newline.
        size_t sp = rest.find(' ');
        section = rest.substr(0, sp);
        blocks.back().sections[section];
        if (sp != std::string::npos && rest.substr(sp + 1) == "chomp") blocks.back().chomp.insert(section);
      }
      continue;
    }
    if (!section.empty()) blocks.back().sections[section] += line + "\n";
  }
  for (auto& b : blocks) {
    for (auto& [k, v] : b.sections) {
      // Blank lines between blocks are not content; one final newline is,
      // unless the section was marked chomp.
      std::string t = trimTrailingNewlines(v);
      v = (k == "response_body" && !b.chomp.count(k) && !t.empty()) ? t + "\n" : t;
    }
  }
  return blocks;
}

// \r \n \t \\ and \xHH, so raw requests can spell any byte.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out += s[i];
      continue;
    }
    char e = s[++i];
    if (e == 'r') out += '\r';
    else if (e == 'n') out += '\n';
    else if (e == 't') out += '\t';
    else if (e == '\\') out += '\\';
    else if (e == 'x' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += '\\';
      out += e;
    }
  }
  return out;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

std::string buildRequest(const Block& b) {
  if (b.has("raw_request")) {
    std::string raw = b.get("raw_request");
    // A raw request is written on lines for readability; line ends come from escapes.
    std::string joined;
    for (const auto& l : lines(raw)) joined += l;
    return unescape(joined);
  }
  std::string first = b.get("request");
  std::string body;
  size_t nl = first.find('\n');
  if (nl != std::string::npos) {  // the lines after the request line are its body
    body = first.substr(nl + 1);
    first = first.substr(0, nl);
  }
  if (first.find(" HTTP/") == std::string::npos) first += " HTTP/1.1";
  std::string req = first + "\r\nHost: localhost\r\nConnection: close\r\n";
  for (const auto& h : lines(b.get("more_headers"))) req += h + "\r\n";
  if (!body.empty() || b.has("request_body")) {
    if (b.has("request_body")) body = b.get("request_body");
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return req + "\r\n" + body;
}

class SpecTest : public ::testing::Test {
 public:
  explicit SpecTest(Block b) : b_(std::move(b)) {}

  void TestBody() override {
    SCOPED_TRACE(b_.file + ":" + std::to_string(b_.line) + ": " + b_.name);
    Gateway gw;
    writeUserFiles(gw);
    gw.setSimpleConf(b_.get("config"), b_.get("http_config"), 1, b_.get("main_config"));
    ASSERT_TRUE(gw.start()) << gw.errorLog();
    RawClient c(gw.port());
    ASSERT_TRUE(c.send(buildRequest(b_)));
    Response r = c.readResponse(Ms(10000), b_.get("request").rfind("HEAD ", 0) == 0);
    if (b_.has("error_code")) EXPECT_EQ(std::to_string(r.status), b_.get("error_code"));
    if (b_.has("response_body")) EXPECT_EQ(r.body, b_.get("response_body"));
    if (b_.has("response_body_like")) {
      EXPECT_TRUE(std::regex_search(r.body, std::regex(b_.get("response_body_like")))) << r.body;
    }
    for (const auto& h : lines(b_.get("response_headers"))) {
      size_t colon = h.find(':');
      std::string name = h.substr(0, colon), want = colon == std::string::npos ? "" : h.substr(colon + 1);
      while (!want.empty() && want.front() == ' ') want.erase(0, 1);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (name.front() == '!') EXPECT_FALSE(r.hasHeader(name.substr(1))) << name;  // "!Name": must be absent
      else if (want.rfind("~ ", 0) == 0) {  // "Name: ~ REGEX"
        EXPECT_TRUE(std::regex_search(r.header(name), std::regex(want.substr(2)))) << name << ": " << r.header(name);
      } else {
        EXPECT_EQ(r.header(name), want) << name;
      }
    }
    if (b_.has("connection_closed")) EXPECT_TRUE(c.waitClosed());
    c.close();  // so that the worker need not linger on it while stopping
    EXPECT_EQ(gw.stop(), 0);
    std::string log = gw.errorLog();
    for (const auto& want : lines(b_.get("error_log"))) EXPECT_NE(log.find(want), std::string::npos) << want << "\n" << log;
    for (const auto& bad : lines(b_.get("no_error_log"))) EXPECT_EQ(log.find(bad), std::string::npos) << bad << "\n" << log;
    const std::string& expected = b_.get("error_log");
    for (const char* lvl : {"[error]", "[crit]", "[alert]", "[emerg]"}) {
      if (expected.find(lvl) == std::string::npos && !b_.has("allow_errors")) {
        EXPECT_EQ(log.find(lvl), std::string::npos) << "unexpected " << lvl << " line:\n" << log;
      }
    }
  }

 private:
  // "--- user_files": ">>> relative/path" starts a file under the prefix.
  void writeUserFiles(Gateway& gw) {
    std::istringstream in(b_.get("user_files"));
    std::string line, path, content;
    auto flush = [&] {
      if (!path.empty()) gw.prefix().write(path, content);
      content.clear();
    };
    while (std::getline(in, line)) {
      if (line.rfind(">>> ", 0) == 0) {
        flush();
        path = line.substr(4);
      } else {
        content += line + "\n";
      }
    }
    flush();
  }

  Block b_;
};

void registerSpecs() {
  DIR* d = opendir(TIDEGATE_SPEC_DIR);
  if (!d) return;
  std::vector<std::string> files;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 5 && n.substr(n.size() - 5) == ".spec") files.push_back(n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::string suite = "Spec_" + f.substr(0, f.size() - 5);
    int n = 0;
    for (auto& b : parseSpec(std::string(TIDEGATE_SPEC_DIR) + "/" + f)) {
      std::string name = "T" + std::to_string(++n);
      ::testing::RegisterTest(suite.c_str(), name.c_str(), nullptr, b.name.c_str(), b.file.c_str(), b.line,
                              [b]() -> ::testing::Test* { return new SpecTest(b); });
    }
  }
}

}  // namespace
}  // namespace tidegate::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  tidegate::test::registerSpecs();
  return RUN_ALL_TESTS();
}
